"""A full Redis (``maxmemory``, ``noeviction``) is a fault to survive, not a crash.

A long LimeChat outage can fill Redis with parked retries. Redis then refuses every write that
may grow memory. The producer must say so (``EnqueueError``); the workers must stay up, keep
what they hold, and deliver everything accepted by themselves once memory is freed. Each test
runs its own ``redis-server`` with a small ``maxmemory`` and fills it with filler keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from producer import EnqueueError, Producer, ProducerSettings
from tests.helpers import WorkerProcess, wait_for, worker_env

from .figures import record
from .receiver import ChaosReceiver
from .redis_server import RedisServer
from .support import send_numbered, wait_settled

pytestmark = pytest.mark.integration

MAXMEMORY = "12mb"


def fill(client: redis.Redis, start: int = 0) -> int:
    """Write filler keys until Redis refuses for want of memory; returns the next key number.

    Big values first, then ever smaller ones: the last gap below ``maxmemory`` is filled too.
    (One connection throughout: a client that disconnects frees memory Redis had counted.)
    """
    count = start
    for size in (64 * 1024, 4096, 256):
        try:
            while True:
                client.set(f"filler:{count}", b"x" * size)
                count += 1
        except redis.exceptions.OutOfMemoryError:
            continue
    return count


@contextmanager
def kept_full(server: RedisServer) -> Iterator[None]:
    """Redis full for as long as the block runs (workers acknowledging free a little memory:
    top it up again and again), then emptied of every filler key."""
    stop = threading.Event()
    filler = server.client()
    written = fill(filler)

    def top_up() -> None:
        nonlocal written
        while not stop.wait(0.02):
            written = fill(filler, written)

    thread = threading.Thread(target=top_up, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        for start in range(0, written, 1000):
            filler.delete(*[f"filler:{i}" for i in range(start, min(start + 1000, written))])
        filler.close()


def full_redis(own_redis: Callable[..., RedisServer]) -> RedisServer:
    server = own_redis(appendonly=False)
    client = server.client()
    client.config_set("maxmemory", MAXMEMORY)
    client.config_set("maxmemory-policy", "noeviction")
    client.close()
    return server


def still_running(worker: WorkerProcess, seconds: float) -> None:
    """The worker (a supervisor and its children) does not exit for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert worker.proc is not None
        assert worker.proc.poll() is None, "the worker exited:\n" + worker.text()
        time.sleep(0.2)


def test_workers_wait_out_a_full_redis_and_deliver_everything_after(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver
) -> None:
    # Given two worker processes busy delivering to a slow receiver
    server = full_redis(own_redis)
    chaos.latency = 0.05
    producer = Producer(ProducerSettings(redis_url=server.url, enqueue_timeout=1.0))
    env = worker_env(
        server.url,
        chaos.url,
        LIMECHAT_WORKER_PROCESSES="2",
        LIMECHAT_VISIBILITY_TIMEOUT="120",  # (nothing comes back by timeout during the test)
    )
    worker = WorkerProcess(env).start()
    try:
        ids = send_numbered(producer, range(300), batch=10)
        wait_for(lambda: chaos.delivered_seqs(), 20, "the first deliveries")
        # When Redis stays full in the middle of it, for longer than a failed start takes
        with kept_full(server):
            # (what the producer manages to enqueue between two top-ups must arrive too)
            extra = 0
            for _ in range(20):
                try:
                    producer.send_event("more", phone="+915673412780", data={"seq": 300 + extra})
                    extra += 1
                except EnqueueError:
                    pass
            delivered_before = len(chaos.delivered_seqs())
            still_running(worker, 12)
        # Then nobody died, and once memory is freed every accepted event is delivered once
        freed = time.monotonic()
        accepted = range(300 + extra)
        tally = wait_settled(accepted, chaos, server.client(), 60, "every event after the fill")
        assert (tally.delivered, tally.dead_lettered, tally.duplicates) == (len(accepted), 0, 0)
        assert len(ids) == 300
        record(
            "full Redis under 2 busy worker processes",
            accepted=len(accepted),
            delivered_before_full=delivered_before,
            full_for_s=12,
            delivered=tally.delivered,
            duplicates=tally.duplicates,
            all_delivered_s_after_freed=round(time.monotonic() - freed, 2),
        )
        assert worker.saw("Redis is full")
        assert not worker.saw("Unrecoverable error"), worker.text()
        # and the producer works again
        producer.send_event("after", phone="+915673412780")
    finally:
        worker.stop()
        producer.close()


def test_a_worker_started_on_a_full_redis_waits_for_memory(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver
) -> None:
    # Given events accepted, then a Redis that filled up before any worker started
    server = full_redis(own_redis)
    producer = Producer(ProducerSettings(redis_url=server.url))
    send_numbered(producer, range(40), batch=10)
    producer.close()
    env = worker_env(server.url, chaos.url, LIMECHAT_WORKER_PROCESSES="2")
    worker = WorkerProcess(env)
    try:
        with kept_full(server):
            # (the producer says so, at once)
            producer = Producer(ProducerSettings(redis_url=server.url))
            with pytest.raises(EnqueueError, match="OutOfMemoryError"):
                producer.send_event("refused", phone="+915673412780", data={"seq": -1})
            producer.close()
            # When workers start on it (the supervisor stops everything if one fails at start)
            worker.start(wait_ready=False)
            still_running(worker, 12)
            assert not chaos.snapshot()
        # Then they deliver by themselves as soon as memory is freed
        freed = time.monotonic()
        tally = wait_settled(range(40), chaos, server.client(), 60, "every event after the fill")
        assert (tally.delivered, tally.duplicates) == (40, 0), tally
        record(
            "workers started on a full Redis",
            events=40,
            full_for_s=12,
            delivered=tally.delivered,
            all_delivered_s_after_freed=round(time.monotonic() - freed, 2),
        )
        assert not worker.saw("Unrecoverable error"), worker.text()
    finally:
        worker.stop()


def test_a_worker_stopped_while_redis_is_full_stops_and_loses_nothing(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver
) -> None:
    # Given a worker in the middle of deliveries when Redis fills up
    server = full_redis(own_redis)
    chaos.latency = 0.05
    producer = Producer(ProducerSettings(redis_url=server.url))
    send_numbered(producer, range(200), batch=10)
    producer.close()
    env = worker_env(server.url, chaos.url, LIMECHAT_VISIBILITY_TIMEOUT="5")
    worker = WorkerProcess(env).start()
    try:
        wait_for(lambda: chaos.delivered_seqs(), 20, "the first deliveries")
        with kept_full(server):
            time.sleep(2)
            # When it is asked to stop (SIGTERM, as a deploy does) while Redis is still full
            asked = time.monotonic()
            code = worker.terminate(timeout=30)
            stopped_in = time.monotonic() - asked
            assert code == 0, worker.text()
        # Then what it held comes back once memory is freed, and another worker delivers it
        again = WorkerProcess(env).start()
        try:
            tally = wait_settled(range(200), chaos, server.client(), 60, "every event")
            assert (tally.delivered, tally.dead_lettered) == (200, 0), tally
            record(
                "SIGTERM while Redis is full",
                events=200,
                exit_code=code,
                stopped_in_s=round(stopped_in, 2),
                delivered=tally.delivered,
                duplicates=tally.duplicates,
            )
            assert not again.saw("Unrecoverable error"), again.text()
        finally:
            again.stop()
    finally:
        worker.stop()
