"""The SQLAlchemy outbox on PostgreSQL: the relay's rows/s to Redis, and what writing the
event adds to the transaction that carries it.

    python -m bench.outbox_relay [--rows 100000] [--batch-size 500] [--transactions 2000]

Targets (issue 13): the relay moves >= 5,000 rows/s; the outbox adds <= 1 ms to the
transaction. Uses a schema of its own in the database (dropped at the end) and Redis database
``LIMECHAT_BENCH_REDIS_URL`` (flushed). The database: ``--database-url``, else
``LIMECHAT_BENCH_DATABASE_URL``, else ``postgresql://postgres@127.0.0.1:5432/test``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from typing import Any
from urllib.parse import quote

import redis
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, create_engine, insert, text
from sqlalchemy.orm import Session

from bench.common import BENCH_REDIS_URL, fresh_redis
from producer import Producer, ProducerSettings, contract
from producer.outbox import outbox_envelope
from producer.sqlalchemy import create_outbox_table, outbox_table, send_event_via_outbox
from producer.sqlalchemy.relay import OutboxRelay, engine_url

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
PHONE = "+915673412780"
DATA = {"order_id": "98765", "currency": "INR", "total": 1499.0}


def fill(engine: Engine, rows: int) -> float:
    """``rows`` outbox rows, committed in chunks; returns the seconds it took."""
    started = time.perf_counter()
    for first in range(0, rows, 5_000):
        chunk = []
        for n in range(first, min(rows, first + 5_000)):
            envelope, payload = outbox_envelope("order_placed", phone=PHONE, data={**DATA, "n": n})
            chunk.append({"event_id": envelope["id"], "account": None, "payload": payload})
        with engine.begin() as conn:
            conn.execute(insert(outbox_table), chunk)
    return time.perf_counter() - started


def relay_throughput(engine: Engine, producer: Producer, rows: int, batch: int) -> dict[str, Any]:
    fill(engine, rows)
    relay = OutboxRelay(engine, producer, batch_size=batch)
    started = time.perf_counter()
    stats = relay.run(lambda: False, once=True)
    seconds = time.perf_counter() - started
    queued = queue_length()
    assert stats.relayed == rows, f"relayed {stats.relayed} of {rows}"
    return {
        "rows": rows,
        "batch_size": batch,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds),
        "queue_messages": queued,
    }


def queue_length() -> int:
    client = redis.Redis.from_url(BENCH_REDIS_URL)
    try:
        return int(client.llen(contract.QUEUE))
    finally:
        client.close()


def transaction_overhead(engine: Engine, transactions: int) -> dict[str, Any]:
    """The same order-placing transaction with and without the outbox row, interleaved (so
    drift in the machine's load falls on both alike)."""
    orders = Table(
        "orders", MetaData(), Column("id", Integer, primary_key=True), Column("ref", Text)
    )
    orders.create(engine)
    plain: list[float] = []
    with_outbox: list[float] = []
    call: list[float] = []
    with Session(engine) as session:
        for n in range(transactions * 2 + 200):
            outbox = n % 2 == 1
            started = time.perf_counter()
            session.execute(insert(orders), {"ref": f"A-{n}"})
            if outbox:
                before = time.perf_counter()
                send_event_via_outbox(session, "order_placed", phone=PHONE, data=DATA)
                took = time.perf_counter() - before
            session.commit()
            elapsed = time.perf_counter() - started
            if n < 200:  # warm-up: connection, statement caches
                continue
            if outbox:
                with_outbox.append(elapsed)
                call.append(took)
            else:
                plain.append(elapsed)
    return {
        "transactions": transactions,
        "plain_ms": _percentiles(plain),
        "with_outbox_ms": _percentiles(with_outbox),
        "send_event_via_outbox_ms": _percentiles(call),
        "added_p50_ms": round(
            (statistics.median(with_outbox) - statistics.median(plain)) * 1000, 3
        ),
        "added_p99_ms": round((_p(with_outbox, 0.99) - _p(plain, 0.99)) * 1000, 3),
    }


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(_p(values, 0.5) * 1000, 3),
        "p99": round(_p(values, 0.99) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--transactions", type=int, default=2_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    base = args.database_url or os.environ.get("LIMECHAT_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    admin = create_engine(engine_url(base))
    schema = f"lc_bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    engine = create_engine(
        engine_url(f"{base}{separator}options={quote(f'-csearch_path={schema}')}"),
        hide_parameters=True,
    )
    fresh_redis().close()
    producer = Producer(ProducerSettings(redis_url=BENCH_REDIS_URL))
    try:
        create_outbox_table(engine)
        figures = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, loopback PostgreSQL and Redis",
            "relay": relay_throughput(engine, producer, args.rows, args.batch_size),
            "transaction": transaction_overhead(engine, args.transactions),
        }
    finally:
        producer.close()
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
        fresh_redis().close()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    relay, txn = figures["relay"], figures["transaction"]
    print(figures["machine"])
    print(
        f"relay: {relay['rows']} rows in {relay['seconds']} s = {relay['rows_per_second']} rows/s "
        f"(batch {relay['batch_size']}; target >= 5000)"
    )
    print(
        f"transaction (insert an order + commit), {txn['transactions']} each: "
        f"plain p50 {txn['plain_ms']['p50']} ms p99 {txn['plain_ms']['p99']} ms; "
        f"with the outbox row p50 {txn['with_outbox_ms']['p50']} ms "
        f"p99 {txn['with_outbox_ms']['p99']} ms"
    )
    print(
        f"outbox adds p50 {txn['added_p50_ms']} ms, p99 {txn['added_p99_ms']} ms (target <= 1 ms);"
        f" send_event_via_outbox itself p50 {txn['send_event_via_outbox_ms']['p50']} ms "
        f"p99 {txn['send_event_via_outbox_ms']['p99']} ms"
    )


if __name__ == "__main__":
    main()
