"""``producer.aio``: the coroutines against the real Redis, a real worker and the sandbox.

Each test drives its own event loops (``asyncio.run``, or loops made and closed by hand), since
how the pools follow the loops is what is under test.
"""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import producer.aio as aio
from producer import EnqueueError, Producer, ProducerSettings, ValidationError
from producer.aio import AsyncProducer
from tests.chaos.redis_server import RedisServer
from tests.helpers import running_worker, wait_for
from tests.observe import queued_events, queued_messages
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


@pytest.fixture
def async_producer(redis_url: str) -> AsyncProducer:
    return AsyncProducer(ProducerSettings(redis_url=redis_url, batch_size=10))


def test_events_sent_from_coroutines_reach_limechat_through_a_real_worker(
    async_producer: AsyncProducer, env: dict[str, str], receiver: Sandbox
) -> None:
    async def place_orders() -> tuple[str, list[str]]:
        one = await async_producer.send_event(
            "order_placed", phone=PHONE, distinct_id="u-1", data={"order_id": "1"}
        )
        many = await async_producer.send_events(
            [{"event": "product_view", "phone": PHONE, "data": {"i": i}} for i in range(25)]
        )
        return one, many

    one, many = asyncio.run(place_orders())
    with running_worker(env):
        wait_for(lambda: len(receiver.accepted()) >= 26, 30, "26 deliveries")
    bodies = [request.body for request in receiver.accepted()]
    assert len(bodies) == 26
    order = next(b for b in bodies if b["event"] == "order_placed")
    assert order == {
        "distinct_id": "u-1",
        "phone": PHONE,
        "event": "order_placed",
        "data": {"order_id": "1"},
    }
    assert sorted(b["data"]["i"] for b in bodies if b["event"] == "product_view") == list(range(25))
    assert len({one, *many}) == 26


def test_the_messages_are_the_sync_producers(
    async_producer: AsyncProducer, producer: Producer, r: redis.Redis
) -> None:
    """The same events, the same batching (25 events in batches of 10: 3 messages)."""
    items = [{"event": "product_view", "phone": PHONE, "data": {"i": i}} for i in range(25)]
    producer.send_events(items)
    sync_view = _without_ids(r)
    r.flushdb()
    asyncio.run(async_producer.send_events(items))
    assert _without_ids(r) == sync_view


def _without_ids(r: redis.Redis) -> tuple[int, list[dict[str, Any]]]:
    events = [
        {k: v for k, v in e.items() if k not in ("id", "created_at")} for e in queued_events(r)
    ]
    return queued_messages(r), events


BAD_CALLS: list[dict[str, Any]] = [
    {"event": "My Event", "phone": PHONE},
    {"event": "order_placed", "phone": "5673412780"},
    {"event": "order_placed", "phone": PHONE, "data": {"x": float("nan")}},
    {"event": "order_placed", "phone": PHONE, "data": [1]},
    {"event": "order_placed", "phone": PHONE, "account": ""},
    {"event": "order_placed", "phone": PHONE, "idempotency_key": "k" * 257},
]


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda c: ",".join(f"{k}" for k in c)[:40])
def test_a_bad_event_is_refused_as_the_sync_api_refuses_it(
    async_producer: AsyncProducer, producer: Producer, r: redis.Redis, call: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError) as sync_error:
        producer.send_event(**call)
    with pytest.raises(ValidationError) as async_error:
        asyncio.run(async_producer.send_event(**call))
    assert (async_error.value.field, str(async_error.value)) == (
        sync_error.value.field,
        str(sync_error.value),
    )
    assert queued_messages(r) == 0


def test_one_bad_item_refuses_the_whole_batch(
    async_producer: AsyncProducer, r: redis.Redis
) -> None:
    items = [{"event": "product_view", "phone": PHONE}] * 3 + [{"event": "x", "phone": "1"}]
    with pytest.raises(ValidationError) as err:
        asyncio.run(async_producer.send_events(items))
    assert (err.value.index, err.value.field) == (3, "phone")
    with pytest.raises(ValidationError, match="items"):
        asyncio.run(async_producer.send_events({"event": "x"}))  # type: ignore[arg-type]
    assert asyncio.run(async_producer.send_events([])) == []
    assert queued_messages(r) == 0


def test_one_idempotency_key_sent_from_many_coroutines_enqueues_once_and_matches_sync(
    async_producer: AsyncProducer, producer: Producer, r: redis.Redis
) -> None:
    # Given 50 coroutines racing with one key (several connections of one loop's pool)
    async def race() -> list[str]:
        return await asyncio.gather(
            *[
                async_producer.send_event(
                    "order_placed", phone=PHONE, account="acct-a", idempotency_key="order-1"
                )
                for _ in range(50)
            ]
        )

    ids = asyncio.run(race())
    # Then one event is queued, and every caller got its id
    [event] = queued_events(r)
    assert set(ids) == {event["id"]}
    # And the sync API shares the key (the same script, the same key scope)
    assert (
        producer.send_event(
            "order_placed", phone=PHONE, account="acct-a", idempotency_key="order-1"
        )
        == event["id"]
    )
    other = producer.send_event("order_placed", phone=PHONE, idempotency_key="order-2")
    assert (
        asyncio.run(
            async_producer.send_event("order_placed", phone=PHONE, idempotency_key="order-2")
        )
        == other
    )
    assert queued_messages(r) == 2


# --- bounded time, errors without secrets ---------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("timeout", [0.3, 1.5])
def test_a_redis_that_never_answers_fails_within_the_timeout_without_the_password(
    silent_port: int, timeout: float
) -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{silent_port}/0"
    sender = AsyncProducer(ProducerSettings(redis_url=url, enqueue_timeout=timeout))

    async def attempt(**kwargs: Any) -> float:
        started = time.monotonic()
        with pytest.raises(EnqueueError) as err:
            if kwargs:
                await sender.send_event("order_placed", phone=PHONE, **kwargs)
            else:
                await sender.send_events([{"event": "x", "phone": PHONE}])
        assert "s3cret" not in str(err.value) and "***" in str(err.value)
        assert err.value.__cause__ is None and err.value.__suppress_context__
        return time.monotonic() - started

    async def every_kind() -> list[float]:
        return [
            await attempt(data={"a": 1}),
            await attempt(idempotency_key="k"),
            await attempt(),
        ]

    for elapsed in asyncio.run(every_kind()):
        assert timeout / 2 < elapsed < timeout + 0.5, elapsed


def test_a_refused_connection_fails_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # (closed again: nothing listens there)
    # A long timeout, so that "at once" and "after the timeout" are far apart on a busy machine
    timeout = 20.0
    sender = AsyncProducer(
        ProducerSettings(redis_url=f"redis://127.0.0.1:{port}/0", enqueue_timeout=timeout)
    )
    started = time.monotonic()
    with pytest.raises(EnqueueError, match=re.escape(f"127.0.0.1:{port}")):
        asyncio.run(sender.send_event("order_placed", phone=PHONE))
    assert time.monotonic() - started < timeout / 4


def test_a_call_cut_short_leaves_no_stale_reply_for_the_next(tmp_path: Path) -> None:
    """A timeout mid-read disconnects that connection: the next call reads its own answer."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    admin = server.client()
    try:
        sender = AsyncProducer(ProducerSettings(redis_url=server.url, enqueue_timeout=0.3))

        async def scenario() -> tuple[str, list[str]]:
            await sender.send_event("warm_up", phone=PHONE)  # (one pooled connection, open)
            admin.execute_command("CLIENT", "PAUSE", "700", "WRITE")
            with pytest.raises(EnqueueError, match="TimeoutError"):
                await sender.send_event("order_placed", phone=PHONE, idempotency_key="a")
            await asyncio.sleep(0.8)  # (the pause is over; what was held ran or was dropped)
            b = await sender.send_event("order_placed", phone=PHONE, idempotency_key="b")
            again = [
                await sender.send_event("order_placed", phone=PHONE, idempotency_key=k)
                for k in ("b", "c")
            ]
            return b, again

        b, (b_again, c) = asyncio.run(scenario())
        queued = [e["id"] for e in queued_events(admin)]
        assert b == b_again and b in queued and c in queued and c != b
        assert len(queued) in (3, 4)  # warm_up, b, c, and "a" if the paused call ran
    finally:
        admin.close()
        server.close()


# --- loops: several, in threads, closed ------------------------------------------------------


def test_the_module_functions_work_across_loops_one_after_another(
    redis_url: str, r: redis.Redis
) -> None:
    aio.configure(ProducerSettings(redis_url=redis_url))
    try:
        ids = [asyncio.run(aio.send_event("order_placed", phone=PHONE)) for _ in range(3)]
        ids += asyncio.run(aio.send_events([{"event": "x", "phone": PHONE}] * 2))
        assert [e["id"] for e in queued_events(r)] == ids
        # each loop's pool was closed and forgotten as its loop shut down
        assert aio.default_producer()._pools == {}
    finally:
        aio.configure(ProducerSettings(redis_url=redis_url))


def test_loops_in_several_threads_share_one_producer(redis_url: str, r: redis.Redis) -> None:
    # (160 connections opened at once: a budget a loaded machine meets; the timeouts have
    # tests of their own)
    async_producer = AsyncProducer(ProducerSettings(redis_url=redis_url, enqueue_timeout=3.0))
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    async def burst(n: int) -> list[str]:
        return await asyncio.gather(
            *[async_producer.send_event("x", phone=PHONE, data={"t": n}) for _ in range(40)]
        )

    def run(n: int) -> None:
        try:
            results[n] = asyncio.run(burst(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(e["id"] for e in queued_events(r)) == sorted(
        i for ids in results.values() for i in ids
    )
    assert queued_messages(r) == 160
    assert async_producer._pools == {}


def test_a_loop_closed_by_hand_does_not_break_the_next(
    async_producer: AsyncProducer, r: redis.Redis
) -> None:
    # Given a loop that closes after aclose() (the documented way), and one that just closes
    tidy = asyncio.new_event_loop()
    tidy.run_until_complete(async_producer.send_event("x", phone=PHONE))

    async def close_ours() -> None:
        await async_producer.aclose()

    tidy.run_until_complete(close_ours())
    tidy.close()
    assert async_producer._pools == {}
    with warnings.catch_warnings():
        # (its sockets are left to the garbage collector, which warns: asyncio's own rule)
        warnings.simplefilter("ignore", ResourceWarning)
        careless = asyncio.new_event_loop()
        careless.run_until_complete(async_producer.send_event("x", phone=PHONE))
        careless.close()
        # When another loop sends
        asyncio.run(async_producer.send_event("x", phone=PHONE))
        # Then it works, and the closed loop's pool was forgotten
        assert careless not in async_producer._pools
        del careless
        gc.collect()
    assert queued_messages(r) == 3


def test_configure_replaces_the_process_wide_producer(redis_url: str, r: redis.Redis) -> None:
    aio.configure(ProducerSettings(redis_url="redis://127.0.0.1:1/0"), enqueue_timeout=0.2)
    with pytest.raises(EnqueueError, match=re.escape("127.0.0.1:1/")):
        asyncio.run(aio.send_event("order_placed", phone=PHONE))
    aio.configure(ProducerSettings(redis_url=redis_url), batch_size=2)
    ids = asyncio.run(aio.send_events([{"event": "x", "phone": PHONE}] * 3))
    assert [e["id"] for e in queued_events(r)] == ids
    assert queued_messages(r) == 2
