"""``outbox-relay``: move committed rows of the SQLAlchemy outbox table onto the queue.

SQLAlchemy is imported inside the command: ``limechat-events`` without the ``sqlalchemy``
extra still starts, and this command alone says what to install.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import click

from producer.errors import ConfigError

from .common import fail

log = logging.getLogger("limechat_events.outbox")


@click.command("outbox-relay")
@click.option(
    "--database-url",
    envvar="DATABASE_URL",
    required=True,
    help="SQLAlchemy URL of the database holding limechat_outbox [env: DATABASE_URL]; "
    "postgresql:// uses psycopg 3.",
)
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Rows per step (one database transaction, one Redis transaction).",
)
@click.option(
    "--poll-interval",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0.001, 60),
    help="Seconds between looks at an empty outbox.",
)
@click.option(
    "--max-backoff",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.01, 600),
    help="Longest wait, in seconds, between tries while Redis or the database fails.",
)
@click.option("--once", is_flag=True, help="Exit when the outbox is empty.")
@click.option("--create-table", is_flag=True, help="Create limechat_outbox if it is missing.")
def outbox_relay(
    database_url: str,
    batch_size: int,
    poll_interval: float,
    max_backoff: float,
    once: bool,
    create_table: bool,
) -> None:
    """Relay the outbox: enqueue committed limechat_outbox rows, delete them, repeat.

    Several relays may run against PostgreSQL (rows are locked with SKIP LOCKED); run one on
    SQLite. Redis or the database down: the rows stay, the relay retries with backoff.
    Stop it with SIGTERM or Ctrl-C: the step under way finishes first.

    \b
      DATABASE_URL=postgresql://app@db/shop limechat-events outbox-relay
    """
    _configure_logging()
    relay, where = _relay(database_url, batch_size)
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if create_table:
        _create_table(relay, where)
    log.info("outbox relay started db=%s batch=%d", where, batch_size)
    stats = relay.run(
        lambda: stopping, once=once, poll_interval=poll_interval, max_backoff=max_backoff
    )
    log.info("outbox relay stopped relayed=%d steps=%d", stats.relayed, stats.steps)
    relay.engine.dispose()


def _configure_logging() -> None:
    """LOG_LEVEL and LOG_FORMAT as the worker reads them (it needs no LimeChat credentials)."""
    from .. import logs
    from ..settings import LOG_LEVELS

    level = os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
    fmt = os.environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if level not in LOG_LEVELS or fmt not in ("text", "json"):
        fail(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}; LOG_FORMAT text or json", 2)
    logs.configure(level, fmt)


def _relay(database_url: str, batch_size: int) -> tuple[Any, str]:
    try:
        from sqlalchemy import create_engine

        from producer import Producer
        from producer.config import url_secrets
        from producer.sqlalchemy.relay import (
            OutboxRelay,
            check_database_url,
            engine_url,
            redacted_db_url,
        )
    except ImportError as exc:
        fail(
            f"outbox-relay needs the sqlalchemy extra: pip install 'limechat-events[sqlalchemy]'"
            f" ({exc.name} is missing)",
            2,
        )
    try:
        check_database_url(database_url)
    except ConfigError as exc:
        fail(f"--database-url (DATABASE_URL): {exc}", 2)
    where = redacted_db_url(database_url)
    try:
        engine = create_engine(engine_url(database_url), hide_parameters=True, pool_pre_ping=True)
    except Exception as exc:  # (a malformed URL or a driver that is not installed)
        fail(f"cannot use --database-url {where}: {type(exc).__name__}", 2)
    try:
        producer = Producer()
    except ConfigError as exc:
        fail(str(exc), 2)
    relay = OutboxRelay(engine, producer, batch_size=batch_size, secrets=url_secrets(database_url))
    return relay, where


def _create_table(relay: Any, where: str) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from producer.sqlalchemy import create_outbox_table

    try:
        create_outbox_table(relay.engine)
    except SQLAlchemyError as exc:
        fail(f"cannot create limechat_outbox in {where}: {relay.describe(exc)}")
