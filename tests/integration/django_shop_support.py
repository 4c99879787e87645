"""Support for the Django tests: a PostgreSQL schema of their own, the example shop as a real
server, the outbox relay as a real process, and a plain HTTP client.

The database comes from ``LIMECHAT_TEST_DATABASE_URL``. A PostgreSQL that does not answer fails
the tests (never a skip: CI must not go green without the database).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import psycopg

from tests.chaos.redis_server import free_port
from tests.helpers import ROOT, WorkerProcess, wait_for

DATABASE_URL = os.environ.get(
    "LIMECHAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MANAGE = str(ROOT / "examples" / "django_shop" / "manage.py")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A schema of this test run's own; yields a database URL whose search path is it.

    Dropped afterwards with everything in it, so the database is left as it was found.
    """
    schema = f"lc_django_test_{secrets.token_hex(4)}"
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in DATABASE_URL else "?"
    try:
        yield f"{DATABASE_URL}{separator}options={quote(f'-csearch_path={schema}', safe='')}"
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def shop_env(redis_url: str, database_url: str, **overrides: str) -> dict[str, str]:
    """The environment the shop and its relay run with (no LimeChat credentials: not theirs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMECHAT_", "SENTRY_"))}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url, PYTHONUNBUFFERED="1")
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py ARGS`` to completion; its output, or an AssertionError showing it."""
    import subprocess

    done = subprocess.run(
        [sys.executable, MANAGE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


class ShopServer(WorkerProcess):
    """``manage.py runserver`` (threaded, no autoreload) on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        super().__init__(env, [MANAGE, "runserver", "--noreload", f"127.0.0.1:{self.port}"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> ShopServer:
        super().start(wait_ready=False)
        try:
            wait_for(self._answers, 30, "the shop's server to answer")
        except AssertionError:
            self.kill()
            raise AssertionError("the shop did not start:\n" + self.text()) from None
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("the shop exited at start:\n" + self.text())
        try:
            return get_json(f"{self.url}/health")[0] == 200
        except OSError:
            return False

    def order(self, **body: Any) -> tuple[int, dict[str, Any]]:
        return post_json(f"{self.url}/orders", body)


class RelayProcess(WorkerProcess):
    """``manage.py limechat_outbox_relay`` with short pauses, ready once it says it started."""

    def __init__(self, env: dict[str, str], *args: str, argv: list[str] | None = None) -> None:
        options = ["--idle-seconds", "0.05", "--max-backoff", "0.5", *args]
        super().__init__(env, (argv or [MANAGE]) + ["limechat_outbox_relay", *options])

    def start(self, wait_ready: bool = True) -> RelayProcess:
        super().start(wait_ready=False)
        if wait_ready:
            wait_for(
                lambda: self.saw("outbox relay started") or self.proc.poll() is not None,  # type: ignore[union-attr]
                30,
                "the relay to start",
            )
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("the relay exited at start:\n" + self.text())
        return self


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    return _call(request)


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    return _call(urllib.request.Request(url))


def _call(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class ShopDatabase:
    """Reads and writes the shop's tables directly, as an operator's psql would."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])

    def empty_tables(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE shop_order, limechat_outbox RESTART IDENTITY")
