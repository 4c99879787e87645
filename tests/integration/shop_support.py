"""The Flask and FastAPI example shops (examples/flask_shop under gunicorn, examples/fastapi_shop
under uvicorn) and ``limechat-events outbox-relay`` as real processes, on a PostgreSQL schema
of the test's own.
"""

from __future__ import annotations

import os

from producer.sqlalchemy.relay import engine_url
from tests.chaos.redis_server import free_port
from tests.helpers import ROOT
from tests.integration.shop_processes import DATABASE_URL as DATABASE_URL
from tests.integration.shop_processes import HttpShop, OutboxRelayProcess


def shop_env(redis_url: str, database_url: str, **overrides: str) -> dict[str, str]:
    """The shop's and its relay's environment: no LimeChat credentials (not theirs), the
    database URL with psycopg 3 named (what the apps' create_engine needs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMECHAT_", "SENTRY_"))}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=engine_url(database_url),
        LIMECHAT_ENQUEUE_TIMEOUT_SECONDS="0.5",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def server_argv(kind: str, port: int) -> list[str]:
    if kind == "flask":
        return [
            "-m", "gunicorn",
            "--chdir", str(ROOT / "examples" / "flask_shop"),
            "--config", str(ROOT / "examples" / "flask_shop" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}",
            "app:app",
        ]  # fmt: skip
    return [
        "-m", "uvicorn",
        "--app-dir", str(ROOT / "examples" / "fastapi_shop"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-access-log",
        "app:app",
    ]  # fmt: skip


class ShopServer(HttpShop):
    """One example app served by its real server (gunicorn: two worker processes)."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        port = free_port()
        super().__init__(env, server_argv(kind, port), port)


class RelayProcess(OutboxRelayProcess):
    """``limechat-events outbox-relay`` with short pauses."""

    def __init__(self, env: dict[str, str], *args: str, argv: list[str] | None = None) -> None:
        options = ["--poll-interval", "0.05", "--max-backoff", "0.5", *args]
        super().__init__(env, (argv or ["-m", "worker"]) + ["outbox-relay", *options])
