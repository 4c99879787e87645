"""The Django outbox relay (``manage.py limechat_outbox_relay``) as real processes, no worker:
several relays share one outbox without sending a row twice (PostgreSQL's SKIP LOCKED, SQLite's
write lock), SIGTERM lets the batch in progress finish, and the base package imports no Django.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import redis

from producer import contract
from tests.helpers import ROOT, WorkerProcess, wait_for
from tests.integration.django_shop_support import (
    RelayProcess,
    ShopDatabase,
    manage,
    shop_env,
)
from tests.integration.shop_processes import INSERT_OUTBOX_ROW, outbox_row
from worker.queueage import queued_events

pytestmark = pytest.mark.integration

WRITE_2000 = """
import json
from django.db import transaction
from producer.django import send_event_via_outbox
with transaction.atomic():
    ids = [send_event_via_outbox("order_placed", phone="+14155552671") for _ in range(2000)]
print(json.dumps(ids))
"""


def outbox_rows(count: int) -> list[tuple[str, None, str, datetime]]:
    """Rows as ``send_event_via_outbox`` writes them, data.n 0 to count - 1."""
    return [outbox_row("+14155552671", {"n": n}) for n in range(count)]


def queued_ids(r: redis.Redis) -> Counter[str]:
    """event id -> how many times it is on the queue."""
    ids: Counter[str] = Counter()
    for raw in r.lrange(contract.QUEUE, 0, -1):
        events = queued_events(raw)
        assert events is not None, raw
        ids.update(e["id"] for e in events)
    return ids


def test_several_relays_on_postgresql_send_every_row_once(
    redis_url: str, r: redis.Redis, django_shop_db: ShopDatabase, processes: list[WorkerProcess]
) -> None:
    env = shop_env(redis_url, django_shop_db.url, LOG_LEVEL="DEBUG")
    relays = [RelayProcess(env, "--batch-size", "50") for _ in range(3)]
    for relay in relays:
        processes.append(relay.start())

    # When: 6,000 rows commit at once, and the three relays work through them
    rows = outbox_rows(6000)
    with psycopg.connect(django_shop_db.url) as conn, conn.cursor() as cursor:
        cursor.executemany(INSERT_OUTBOX_ROW, rows)
    wait_for(lambda: django_shop_db.count("limechat_outbox") == 0, 60, "the outbox emptied")

    # Then: each event is on the queue exactly once, and each relay took a share
    assert queued_ids(r) == Counter({row[0]: 1 for row in rows})
    for relay in relays:
        assert relay.saw("relayed rows="), relay.text()


def test_sigterm_lets_the_batch_in_progress_finish(
    redis_url: str, r: redis.Redis, django_shop_db: ShopDatabase, processes: list[WorkerProcess]
) -> None:
    rows = outbox_rows(4000)
    with psycopg.connect(django_shop_db.url) as conn, conn.cursor() as cursor:
        cursor.executemany(INSERT_OUTBOX_ROW, rows)
    relay = RelayProcess(shop_env(redis_url, django_shop_db.url), "--batch-size", "20")
    processes.append(relay.start())
    wait_for(lambda: django_shop_db.count("limechat_outbox") < 3000, 30, "the relay under way")

    assert relay.terminate(10) == 0, relay.text()

    # What left the table is on the queue, once; what is on the queue left the table.
    left = {row[0] for row in django_shop_db.rows("SELECT event_id FROM limechat_outbox")}
    queued = queued_ids(r)
    assert left, "the relay finished before SIGTERM"
    assert set(queued) == {row[0] for row in rows} - left
    assert set(queued.values()) == {1}
    assert relay.saw("outbox relay stopped"), relay.text()


def test_rows_that_cannot_travel_are_left_and_never_stop_the_rows_behind_them(
    redis_url: str, r: redis.Redis, django_shop_db: ShopDatabase
) -> None:
    # A whole batch of hand-edited rows (NaN, nesting past the limits, not JSON), then good ones
    bad = [
        ("nan", '{"id": "nan", "x": NaN}'),
        ("deep", '{"id": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("text", "not json"),
    ]
    good = outbox_rows(5)
    now = datetime.now(timezone.utc)
    with psycopg.connect(django_shop_db.url) as conn, conn.cursor() as cursor:
        cursor.executemany(INSERT_OUTBOX_ROW, [(i, None, text, now) for i, text in bad])
        cursor.executemany(INSERT_OUTBOX_ROW, good)
    out = manage(
        shop_env(redis_url, django_shop_db.url),
        "limechat_outbox_relay",
        "--once",
        "--batch-size",
        "3",
    )
    assert queued_ids(r) == Counter({row[0]: 1 for row in good}), out
    left = {row[0] for row in django_shop_db.rows("SELECT event_id FROM limechat_outbox")}
    assert left == {"nan", "deep", "text"}
    assert out.count("left in the table, not relayed") == 3


def test_two_relays_on_sqlite_send_every_row_once(
    tmp_path: Path, redis_url: str, r: redis.Redis, processes: list[WorkerProcess]
) -> None:
    path = tmp_path / "shop.db"
    env = shop_env(redis_url, f"sqlite:///{path}", LOG_LEVEL="DEBUG")
    manage(env, "migrate", "--no-input")
    relays = [RelayProcess(env, "--batch-size", "25") for _ in range(2)]
    for relay in relays:
        processes.append(relay.start())
    # When: 2,000 events are written by send_event_via_outbox in one transaction
    written = manage(env, "shell", "-c", WRITE_2000)
    ids = json.loads(written.strip().splitlines()[-1])

    def outbox_empty() -> bool:
        with sqlite3.connect(path, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM limechat_outbox").fetchone()[0] == 0

    wait_for(outbox_empty, 60, "the outbox emptied")
    assert queued_ids(r) == Counter(dict.fromkeys(ids, 1))
    for relay in relays:  # the one kept waiting for the lock waits; it does not fail
        assert relay.proc is not None and relay.proc.poll() is None, relay.text()


def test_the_base_package_imports_no_django() -> None:
    code = (
        "import sys, producer, producer.outbox, worker.cli\n"
        "found = [m for m in ('django', 'sqlalchemy', 'fastapi', 'psycopg') if m in sys.modules]\n"
        "assert not found, found\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
