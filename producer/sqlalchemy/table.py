"""The ``limechat_outbox`` table, laid out as Django's outbox lays it out (one relay design)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    func,
)
from sqlalchemy.engine import Connection, Engine

OUTBOX_TABLE = "limechat_outbox"


def define_outbox_table(metadata: MetaData) -> Table:
    """The outbox table in ``metadata``: add it to your app's metadata for Alembic to see it.

    ``id`` is the relay's order; ``event_id`` unique, so one event is one row.
    """
    return Table(
        OUTBOX_TABLE,
        metadata,
        # SQLite autoincrements only an INTEGER PRIMARY KEY (a BIGINT one stays NULL).
        Column(
            "id",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("event_id", Text, nullable=False, unique=True),
        Column("account", Text, nullable=True),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


#: The table as the writer and the relay use it (any metadata's copy has the same columns).
outbox_table = define_outbox_table(MetaData())


def create_outbox_table(bind: Engine | Connection) -> None:
    """``CREATE TABLE IF NOT EXISTS`` the outbox (for apps that do not run migrations)."""
    outbox_table.create(bind, checkfirst=True)
