"""Support for the Django tests: a PostgreSQL schema of their own, the example shop as a real
server, the outbox relay as a real process (what all the shops' tests share: shop_processes).

The database comes from ``LIMECHAT_TEST_DATABASE_URL``. A PostgreSQL that does not answer fails
the tests (never a skip: CI must not go green without the database).
"""

from __future__ import annotations

import os
import sys

import psycopg

from tests.chaos.redis_server import free_port
from tests.helpers import ROOT
from tests.integration.shop_processes import (
    DATABASE_URL as DATABASE_URL,
)
from tests.integration.shop_processes import (
    Database,
    HttpShop,
    OutboxRelayProcess,
)
from tests.integration.shop_processes import (
    postgres_schema as postgres_schema,
)

MANAGE = str(ROOT / "examples" / "django_shop" / "manage.py")


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


class ShopServer(HttpShop):
    """``manage.py runserver`` (threaded, no autoreload) on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        port = free_port()
        super().__init__(env, [MANAGE, "runserver", "--noreload", f"127.0.0.1:{port}"], port)


class RelayProcess(OutboxRelayProcess):
    """``manage.py limechat_outbox_relay`` with short pauses, ready once it says it started."""

    def __init__(self, env: dict[str, str], *args: str, argv: list[str] | None = None) -> None:
        options = ["--idle-seconds", "0.05", "--max-backoff", "0.5", *args]
        super().__init__(env, (argv or [MANAGE]) + ["limechat_outbox_relay", *options])


class ShopDatabase(Database):
    def empty_tables(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE shop_order, limechat_outbox RESTART IDENTITY")
