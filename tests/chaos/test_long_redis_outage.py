"""A Redis outage longer than the worker's patience: the worker resumes by itself after it.

The worker's own Redis client rides out about 30 s of outage; past that, recording an outcome
fails, and so does handing the message back. Before the fix each such failure also lost the
worker's prefetch slot: once all of them were gone the worker never took another message nor
noticed its dead connection, while its scheduler went on beating ("alive" in ``stats``): the
whole fleet stalled for good after one long outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from producer import Producer, ProducerSettings
from tests.helpers import running_worker, wait_for, worker_env

from .figures import record
from .receiver import ChaosReceiver
from .redis_server import RedisServer
from .support import send_numbered, wait_settled

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 40  # (longer than the worker's ~33 s of retries)


def test_a_worker_resumes_by_itself_after_an_outage_longer_than_its_patience(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver
) -> None:
    # Given a busy worker (every thread in the middle of a delivery)
    server = own_redis()
    chaos.latency = 0.01
    producer = Producer(ProducerSettings(redis_url=server.url, batch_size=10))
    send_numbered(producer, range(300))
    producer.close()
    env = worker_env(server.url, chaos.url, LIMECHAT_VISIBILITY_TIMEOUT="10")
    with running_worker(env) as worker:
        wait_for(lambda: len(chaos.delivered_seqs()) >= 100, 30, "the first 100 deliveries")
        # When Redis is gone for longer than the worker waits for it
        server.stop()
        time.sleep(OUTAGE_SECONDS)
        server.start()
        back = time.monotonic()
        # Then the same worker delivers everything, by itself
        try:
            tally = wait_settled(range(300), chaos, server.client(), 60, "every event")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe worker said:\n{worker.text()[-40000:]}") from None
        resumed_in = time.monotonic() - back
        assert worker.proc is not None and worker.proc.poll() is None, worker.text()[-3000:]
    assert (tally.delivered, tally.dead_lettered) == (300, 0), tally
    record(
        "Redis down longer than the worker's patience",
        outage_s=OUTAGE_SECONDS,
        delivered=tally.delivered,
        duplicates=tally.duplicates,
        all_delivered_s_after_redis_back=round(resumed_in, 1),
    )
