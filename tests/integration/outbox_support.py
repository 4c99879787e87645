"""The SQLAlchemy outbox tests' PostgreSQL: a schema of their own, and reading the queue.

``LIMECHAT_TEST_DATABASE_URL`` names the database (default: CI's ``test``). An unreachable
PostgreSQL fails the tests, locally too: a green run must have exercised the outbox.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import redis
from sqlalchemy import Engine, create_engine, func, insert, select, text

from producer import contract
from producer.outbox import outbox_envelope
from producer.sqlalchemy import create_outbox_table, outbox_table
from producer.sqlalchemy.relay import engine_url

TEST_DATABASE_URL = os.environ.get(
    "LIMECHAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@contextmanager
def private_schema() -> Iterator[str]:
    """A database URL whose connections work in a fresh schema, dropped afterwards."""
    admin = create_engine(engine_url(TEST_DATABASE_URL))
    schema = f"lc_outbox_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {TEST_DATABASE_URL} is not usable ({type(exc).__name__}); "
            "run scripts/ensure-postgres"
        )
    separator = "&" if "?" in TEST_DATABASE_URL else "?"
    url = f"{TEST_DATABASE_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def outbox_engine(url: str) -> Engine:
    engine = create_engine(engine_url(url), hide_parameters=True)
    create_outbox_table(engine)
    return engine


def fill_outbox(engine: Engine, count: int) -> list[str]:
    """``count`` valid rows in one transaction (as many ``send_event_via_outbox`` would
    write, in one INSERT); returns their event ids in order."""
    rows = []
    for n in range(count):
        envelope, payload = outbox_envelope("order_placed", phone="+915673412780", data={"n": n})
        rows.append({"event_id": envelope["id"], "account": None, "payload": payload})
    with engine.begin() as conn:
        conn.execute(insert(outbox_table), rows)
    return [row["event_id"] for row in rows]


def outbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox_table)).scalar_one())


@dataclass(frozen=True)
class Queued:
    event_id: str
    event: dict[str, Any]
    redelivered: bool


def queued(client: redis.Redis) -> list[Queued]:
    """Every event on the queue, oldest first, with its message's redelivered flag."""
    found = []
    for raw in reversed(client.lrange(contract.QUEUE, 0, -1)):  # LPUSHed: newest first
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        flag = message["headers"].get("redelivered") is True
        found += [Queued(e["id"], e, flag) for e in body[0][0]]
    return found
