"""The example shops (examples/flask_shop under gunicorn, examples/fastapi_shop under uvicorn)
as real server processes, each on a PostgreSQL schema of its own that is dropped after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from tests.chaos.redis_server import free_port
from tests.helpers import ROOT, wait_for

DATABASE_URL = os.environ.get(
    "LIMECHAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BIN = Path(sys.executable).parent


class Schema:
    """A PostgreSQL schema of the test's own; ``sqlalchemy_url`` makes it the search path."""

    def __init__(self) -> None:
        self.name = f"shop_{uuid.uuid4().hex[:12]}"
        # (no skip when PostgreSQL is down: CI must not go green without it)
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')

    @property
    def sqlalchemy_url(self) -> str:
        parts = urlsplit(DATABASE_URL)
        options = quote(f"-csearch_path={self.name}", safe="")
        query = "&".join(q for q in (parts.query, f"options={options}") if q)
        return urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, query, ""))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.name}"')
            return conn.execute(sql).fetchall()

    def drop(self) -> None:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.name}" CASCADE')


def server_command(kind: str, port: int) -> list[str]:
    if kind == "flask":
        return [
            str(BIN / "gunicorn"),
            "--chdir", str(ROOT / "examples" / "flask_shop"),
            "--config", str(ROOT / "examples" / "flask_shop" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}",
            "app:app",
        ]  # fmt: skip
    return [
        str(BIN / "uvicorn"),
        "--app-dir", str(ROOT / "examples" / "fastapi_shop"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-access-log",
        "app:app",
    ]  # fmt: skip


class ShopServer:
    """One example app served by its real server, in a process group of its own."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        self.kind = kind
        self.port = free_port()
        # (a file, not a pipe: nothing blocks on it; closed by stop())
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.output = ""
        self.proc = subprocess.Popen(
            server_command(kind, self.port),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._up, 30, f"the {kind} shop to answer")
        except AssertionError:
            raise AssertionError(self.stop()) from None

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the {self.kind} shop exited:\n{self.stop()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
        except urllib.error.HTTPError:
            return True  # (answering: a 404 or 405 for /)
        except OSError:
            return False
        return True

    def post(self, path: str, body: dict[str, Any], timeout: float = 10) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stop(self) -> str:
        """SIGTERM the group (SIGKILL if it lingers); returns what the server printed."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self.log.closed:
            self.log.seek(0)
            self.output = self.log.read().decode(errors="replace")
            self.log.close()
        return self.output
