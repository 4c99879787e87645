"""worker/markers.py against the real Redis: the hourly sets, the window, the writer thread."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer import contract
from worker import markers

pytestmark = pytest.mark.integration


def test_marked_ids_are_found_within_the_window_and_not_after(r: redis.Redis) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)] + ["not-a-uuid"]
    now = time.time()
    pipe = r.pipeline(transaction=False)
    bucket = markers.mark(pipe, ids[:2] + ids[3:], now)
    markers.keep(pipe, [bucket], 4 * 3600)
    pipe.execute()
    found = markers.delivered(r, ids, 4 * 3600, now=now + 3 * 3600)
    assert found == {ids[0], ids[1], ids[3]}
    # (a lookup more than the window and an hour later no longer reads that hour's set)
    assert markers.delivered(r, ids, 4 * 3600, now=now + 6 * 3600) == set()
    # ...kept until the window has run from the end of its hour
    ends = (bucket + 1) * contract.DELIVERED_BUCKET_SECONDS + 4 * 3600 + 1
    ttl = r.ttl(contract.delivered_bucket_key(bucket))
    assert ends - now - 5 <= ttl <= ends - now + 1


def test_the_old_per_event_keys_are_still_honoured(r: redis.Redis) -> None:
    event_id = str(uuid.uuid4())
    r.set(contract.delivered_key(event_id), "1", ex=60)
    assert markers.delivered(r, [event_id, "other"], 4 * 3600) == {event_id}


def test_the_writer_marks_every_threads_ids_before_wait_returns(r: redis.Redis) -> None:
    writer = markers.MarkerWriter(r, 4 * 3600)
    ids = [[str(uuid.uuid4()) for _ in range(50)] for _ in range(8)]
    tickets: list[int] = []

    def deliver(mine: list[str]) -> None:
        for event_id in mine:
            ticket = writer.add(event_id)
        writer.wait(ticket)
        tickets.append(ticket)
        # Then, once wait returned, every one of this thread's ids is marked
        assert markers.delivered(r, mine, 4 * 3600) == set(mine)

    threads = [threading.Thread(target=deliver, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    writer.close()
    assert len(tickets) == 8 and max(tickets) == 400
    markers.keep_current(r, 4 * 3600)
    key = contract.delivered_bucket_key(int(time.time() // contract.DELIVERED_BUCKET_SECONDS))
    assert r.scard(key) == 400 and r.ttl(key) > 4 * 3600


def test_a_writer_that_cannot_reach_redis_makes_wait_raise() -> None:
    # (no retries: redis-py's jittered backoff would draw on the random module from the
    # writer's thread, under the Hypothesis tests that run later in this process)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    writer = markers.MarkerWriter(dead, 60)
    try:
        ticket = writer.add(str(uuid.uuid4()))
        with pytest.raises(redis.RedisError):
            writer.wait(ticket)
    finally:
        writer.close()
    assert writer._thread is not None and not writer._thread.is_alive()
