"""The producer's own connection pool (producer/connections.py) against real Redis servers.

What redis-py's pool did for us and ours must still do: replace an idle connection Redis closed
(a restart between two requests) without failing the call; never read a late reply as the
answer to the next call; give a forked child connections of its own; make a burst of more
concurrent sends than connections wait its turn, and fail clearly past the wait.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import pytest
import redis

from producer import EnqueueError, Producer, ProducerSettings, contract
from producer.aio import AsyncProducer
from producer.connections import Connections

from .redis_server import RedisServer
from .slow_proxy import SlowReplies
from .support import PHONE

pytestmark = pytest.mark.integration


def test_an_idle_connection_closed_by_a_redis_restart_is_replaced_without_failing_the_call(
    own_redis: Callable[..., RedisServer],
) -> None:
    server = own_redis(appendonly=False)
    producer = Producer(ProducerSettings(redis_url=server.url))
    producer.send_event("order_placed", phone=PHONE)  # (its connection now idle in the pool)
    server.stop()
    server.start()
    # The pooled socket is dead; the call finds that out before sending, not after.
    producer.send_event("order_placed", phone=PHONE)
    assert server.client().llen(contract.QUEUE) == 1
    producer.close()


def test_the_async_producer_replaces_an_idle_connection_closed_by_a_restart_too(
    own_redis: Callable[..., RedisServer],
) -> None:
    server = own_redis(appendonly=False)
    producer = AsyncProducer(ProducerSettings(redis_url=server.url))

    async def main() -> None:
        await producer.send_event("order_placed", phone=PHONE)
        server.stop()
        server.start()
        # (the loop runs between requests, and reads the closed socket's end of file then; a
        # loop blocked all along would not know, and its next call fails with EnqueueError
        # rather than send the event twice)
        await asyncio.sleep(0.2)
        await producer.send_event("order_placed", phone=PHONE)

    asyncio.run(main())
    assert server.client().llen(contract.QUEUE) == 1


def test_a_late_reply_is_never_read_as_the_next_calls_answer(
    own_redis: Callable[..., RedisServer],
) -> None:
    server = own_redis(appendonly=False)
    relay = SlowReplies(server.port, delay=1.0)
    producer = Producer(ProducerSettings(redis_url=relay.url(), enqueue_timeout=0.4))
    producer.ping()
    relay.slow = 1
    with pytest.raises(EnqueueError):
        producer.send_event("order_placed", phone=PHONE)
    time.sleep(1.2)  # (the late reply has arrived by now, on whichever socket it was sent)
    # An idempotency key's script answers with the event id: a stale LPUSH reply (the queue's
    # length) read in its place would come back as the id.
    event_id = producer.send_event("order_placed", phone=PHONE, idempotency_key="k-1")
    assert len(event_id) == 36 and event_id in str(server.client().lrange(contract.QUEUE, 0, 0))
    producer.close()
    relay.stop()


def test_a_forked_child_gets_connections_of_its_own(redis_url: str, r: redis.Redis) -> None:
    producer = Producer(ProducerSettings(redis_url=redis_url))
    producer.send_event("order_placed", phone=PHONE)  # (a connection in the parent's pool)
    child = os.fork()
    if child == 0:  # the child: sends as fast as it can, while the parent does the same
        try:
            ids = [producer.send_event("order_placed", phone=PHONE) for _ in range(300)]
            os._exit(0 if len(set(ids)) == 300 else 1)
        except BaseException:
            os._exit(2)
    ids = [
        producer.send_event("order_placed", phone=PHONE, idempotency_key=f"p{i}")
        for i in range(300)
    ]
    _, status = os.waitpid(child, 0)
    # Sharing one socket, the two would read each other's replies (the parent's ids would be
    # queue lengths, or a call would fail); each with its own, all 601 events are queued.
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(len(i) == 36 for i in ids), [i for i in ids if len(i) != 36][:3]
    assert r.llen(contract.QUEUE) == 601
    producer.close()


def test_more_concurrent_calls_than_connections_wait_their_turn_then_fail_clearly(
    redis_url: str, r: redis.Redis
) -> None:
    from redis.connection import parse_url

    options = parse_url(redis_url)  # type: ignore[no-untyped-call]
    # Each call holds its connection 0.3 s (a blocking pop on an empty list).
    hold = ("BLPOP", "limechat-test:nothing", 0.3)

    def burst(pool: Connections, threads: int) -> list[object]:
        results: list[object] = []

        def one() -> None:
            try:
                results.append(pool.call(*hold))
            except redis.RedisError as exc:
                results.append(exc)

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return results

    patient = Connections(options, limit=2, wait=5.0)
    started = time.monotonic()
    assert burst(patient, 6) == [None] * 6  # (BLPOP's answer when it times out)
    # Two at a time: three rounds of 0.3 s.
    assert time.monotonic() - started >= 0.85
    impatient = Connections(options, limit=2, wait=0.1)
    results = burst(impatient, 6)
    refused = [x for x in results if isinstance(x, redis.ConnectionError)]
    assert results.count(None) == 2 and len(refused) == 4
    assert "all 2 connections busy" in str(refused[0])
    patient.close()
    impatient.close()


def test_a_health_check_interval_in_the_url_is_honoured(
    own_redis: Callable[..., RedisServer],
) -> None:
    """``?health_check_interval=`` (redis-py passes it to the connection): a connection idle
    longer than that is PINGed before the event is written to it (found by review: the
    producer's own sending had skipped the check)."""
    server = own_redis(appendonly=False)
    admin = server.client()
    producer = Producer(ProducerSettings(redis_url=server.url + "?health_check_interval=1"))
    producer.send_event("one", phone=PHONE)
    admin.config_resetstat()
    time.sleep(1.2)
    producer.send_event("two", phone=PHONE)
    assert admin.info("commandstats").get("cmdstat_ping", {}).get("calls", 0) == 1
    producer.close()
