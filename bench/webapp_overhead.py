"""What sending an event adds to a web request, at 200 requests/s: p50 and p99 per way of sending.

Each "request" is what the example shops' order route does: a PostgreSQL transaction that
inserts an order, plus the event, sent one of these ways:

- ``none``      no event (the baseline request);
- ``sync``      ``producer.send_event`` after the commit (a WSGI worker thread);
- ``async``     ``await producer.aio.send_event`` after the commit (async SQLAlchemy, one loop);
- ``on_commit`` ``producer.sqlalchemy.send_event_on_commit`` before the commit, sent by it;
- ``outbox``    ``producer.sqlalchemy.send_event_via_outbox``: a row in the same transaction;
- ``async_outbox`` ``await producer.sqlalchemy.aio.send_event_via_outbox`` (an AsyncSession);
- ``async_wsgi`` ``await producer.aio.send_event`` in a new event loop per request, as Django
                runs an async view under WSGI (runserver, gunicorn sync workers);
- ``celery``    what users write instead: the naive Celery task's ``.delay(body)`` after the
                commit (bench/naive.py; no validation, Celery's own message building);
- ``dramatiq``  the naive Dramatiq actor's ``.send(body)`` after the commit
                (bench/naive_dramatiq.py).

Each request sends for a customer of its own (a different phone number): nothing is cached
from one request to the next.

Requests start on a fixed schedule (open loop: one every 5 ms, whatever the previous took).
The producer's share is timed around its own calls inside each request (for ``on_commit``
the call plus the enqueue its commit hook makes; for ``outbox`` the INSERT of the row), which
is the overhead itself rather than a difference of two noisy percentiles; the whole request's
p50/p99 are reported beside it.

    LIMECHAT_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 \\
    LIMECHAT_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m bench.webapp_overhead --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from sqlalchemy import BigInteger, Column, Identity, MetaData, Numeric, Table, Text, insert
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import producer.aio as aio
from bench.common import BENCH_REDIS_URL, fresh_redis
from producer import Producer, ProducerSettings

DATABASE_URL = os.environ.get(
    "LIMECHAT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RATE = 200.0
MODES = (
    "none",
    "sync",
    "async",
    "on_commit",
    "outbox",
    "async_outbox",
    "async_wsgi",
    "celery",
    "dramatiq",
)


def phone(i: int) -> str:
    """Request ``i``'s customer: an Indian mobile number of its own."""
    return f"+9198{i % 10**8:08d}"


metadata = MetaData()
orders = Table(
    "bench_orders",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("phone", Text, nullable=False),
    Column("total", Numeric(12, 2), nullable=False),
)


@dataclass
class Samples:
    """Per request: the producer's time and the whole request's, in seconds."""

    producer: list[float] = field(default_factory=list)
    request: list[float] = field(default_factory=list)
    late: int = 0  # requests that started more than 5 ms behind their schedule


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextlib.contextmanager
def schema() -> Iterator[str]:
    """A schema of the run's own (the orders and the outbox), dropped after."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    parts = urlsplit(DATABASE_URL)
    options = quote(f"-csearch_path={name}", safe="")
    query = "&".join(q for q in (parts.query, f"options={options}") if q)
    try:
        yield urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, query, ""))
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


class TimedProducer(Producer):
    """Adds the time of each enqueue to ``spent`` (what an on-commit hook costs the request)."""

    spent = 0.0

    def enqueue_event(self, *args: Any, **kwargs: Any) -> str:
        started = time.perf_counter()
        try:
            return super().enqueue_event(*args, **kwargs)  # type: ignore[misc]
        finally:
            self.spent += time.perf_counter() - started


def run_sync(mode: str, url: str, seconds: float) -> Samples:
    """Requests one after another on one thread, as one WSGI worker thread serves them."""
    engine = create_sync_engine(url)
    sender = TimedProducer(ProducerSettings(redis_url=BENCH_REDIS_URL))
    samples = Samples()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(engine.dispose)
        cleanup.callback(sender.close)
        if mode in ("on_commit", "outbox"):
            from producer.sqlalchemy import create_outbox_table

            create_outbox_table(engine)
        if mode == "async_wsgi":
            aio.configure(ProducerSettings(redis_url=BENCH_REDIS_URL))
        request = _sync_request(mode, sender)
        started = time.perf_counter()
        for i in range(int(seconds * RATE)):
            due = started + i / RATE
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            elif wait < -0.005:
                samples.late += 1
            begun = time.perf_counter()
            with Session(engine) as session:
                samples.producer.append(request(session, i))
            samples.request.append(time.perf_counter() - begun)
    return samples


def _sync_request(mode: str, sender: TimedProducer) -> Callable[[Session, int], float]:
    send_naive = _naive_sender(mode)

    def place(session: Session, i: int) -> int:
        statement = insert(orders).values(phone=phone(i), total=i).returning(orders.c.id)
        return int(session.execute(statement).scalar_one())

    def request(session: Session, i: int) -> float:
        spent = 0.0
        with session.begin():
            order_id = place(session, i)
            t0 = time.perf_counter()
            if mode == "on_commit":
                from producer.sqlalchemy import send_event_on_commit

                sender.spent = 0.0
                send_event_on_commit(
                    session,
                    "order_placed",
                    phone=phone(i),
                    data={"order_id": str(order_id)},
                    producer=sender,
                )
            elif mode == "outbox":
                from producer.sqlalchemy import send_event_via_outbox

                send_event_via_outbox(
                    session, "order_placed", phone=phone(i), data={"order_id": str(order_id)}
                )
            spent += time.perf_counter() - t0
        if mode == "on_commit":
            spent += sender.spent  # (the enqueue its commit hook made)
        elif mode == "sync":
            t0 = time.perf_counter()
            sender.send_event("order_placed", phone=phone(i), data={"order_id": str(order_id)})
            spent += time.perf_counter() - t0
        elif mode == "async_wsgi":
            spent += asyncio.run(_timed_async_send(phone(i), order_id))
        elif send_naive is not None:
            t0 = time.perf_counter()
            send_naive(
                {
                    "distinct_id": phone(i),
                    "phone": phone(i),
                    "event": "order_placed",
                    "data": {"order_id": str(order_id)},
                }
            )
            spent += time.perf_counter() - t0
        return spent

    return request


async def _timed_async_send(customer: str, order_id: int) -> float:
    t0 = time.perf_counter()
    await aio.send_event("order_placed", phone=customer, data={"order_id": str(order_id)})
    return time.perf_counter() - t0


def _naive_sender(mode: str) -> Callable[[dict[str, Any]], object] | None:
    """The call the naive Celery task or Dramatiq actor makes in a request, for those modes."""
    if mode == "celery":
        from bench import naive

        return naive.send_custom_event.delay
    if mode == "dramatiq":
        from bench import naive_dramatiq

        return naive_dramatiq.send_custom_event.send
    return None


def run_async(mode: str, url: str, seconds: float) -> Samples:
    """Requests on one event loop, on the same schedule, one at a time.

    One at a time, as in ``run_sync``: requests that overlap on a loop that is behind would
    each time the others' work (every ``await`` lets them run), not the producer's.
    """
    samples = Samples()

    async def request(i: int, engine: Any) -> None:
        begun = time.perf_counter()
        async with AsyncSession(engine) as session, session.begin():
            result = await session.execute(
                insert(orders).values(phone=phone(i), total=i).returning(orders.c.id)
            )
            order_id = result.scalar_one()
            if mode == "async_outbox":
                from producer.sqlalchemy.aio import send_event_via_outbox

                t0 = time.perf_counter()
                await send_event_via_outbox(
                    session, "order_placed", phone=phone(i), data={"order_id": str(order_id)}
                )
                samples.producer.append(time.perf_counter() - t0)
        if mode == "async":
            t0 = time.perf_counter()
            await aio.send_event("order_placed", phone=phone(i), data={"order_id": str(order_id)})
            samples.producer.append(time.perf_counter() - t0)
        samples.request.append(time.perf_counter() - begun)

    async def main() -> None:
        engine = create_async_engine(url)
        if mode == "async_outbox":
            from producer.sqlalchemy import create_outbox_table

            async with engine.begin() as connection:
                await connection.run_sync(create_outbox_table)
        started = time.perf_counter()
        for i in range(int(seconds * RATE)):
            if (wait := started + i / RATE - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            elif wait < -0.005:
                samples.late += 1
            await request(i, engine)
        await engine.dispose()

    aio.configure(ProducerSettings(redis_url=BENCH_REDIS_URL))
    asyncio.run(main())
    return samples


def measure(mode: str, seconds: float) -> dict[str, Any]:
    fresh_redis()
    with schema() as url:
        engine = create_sync_engine(url)
        metadata.create_all(engine)
        engine.dispose()
        if mode in ("async", "async_outbox"):
            samples = run_async(mode, url, seconds)
        else:
            samples = run_sync(mode, url, seconds)
    ms = 1000.0
    return {
        "mode": mode,
        "requests": len(samples.request),
        "late": samples.late,
        "producer_p50_ms": percentile(samples.producer, 50) * ms,
        "producer_p99_ms": percentile(samples.producer, 99) * ms,
        "producer_mean_ms": statistics.fmean(samples.producer) * ms,
        "request_p50_ms": percentile(samples.request, 50) * ms,
        "request_p99_ms": percentile(samples.request, 99) * ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per mode (default 10)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--json", action="store_true", help="one JSON object per mode")
    args = parser.parse_args()
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"# {RATE:g} requests/s, {args.seconds:g} s per mode")
    if not args.json:
        print("mode       requests late  producer p50   p99 ms   request p50   p99 ms")
    for mode in args.modes.split(","):
        try:
            row = measure(mode, args.seconds)
        except ImportError as exc:
            print(f"{mode:10} not measured: {exc}")
            continue
        if args.json:
            print(json.dumps(row))
            continue
        print(
            f"{mode:10} {row['requests']:8} {row['late']:4}  "
            f"{row['producer_p50_ms']:12.3f} {row['producer_p99_ms']:8.3f}  "
            f"{row['request_p50_ms']:12.3f} {row['request_p99_ms']:8.3f}"
        )


if __name__ == "__main__":
    main()
