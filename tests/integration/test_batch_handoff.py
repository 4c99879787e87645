"""A batch that runs past half the visibility timeout hands its unstarted events to the
scheduler instead of overrunning (README, *Batches*): the log line, the parked entries, then
delivery, every event exactly once.
"""

from __future__ import annotations

import re

import pytest
import redis

from producer import Producer
from tests.chaos.receiver import ChaosReceiver
from tests.chaos.support import dead_seqs, nothing_held
from tests.helpers import WorkerProcess, wait_for, worker_env
from worker.schedule import parked

pytestmark = pytest.mark.integration

PHONE = "+915673412780"
HANDED = re.compile(r"(\d+) events handed to the scheduler")


def test_a_batch_of_slow_posts_hands_its_unstarted_events_to_the_scheduler(
    redis_url: str, r: redis.Redis, producer: Producer
) -> None:
    # Given a receiver taking 0.7 s per request and a visibility timeout of 4 s (so a batch
    # may run for 2 s), and a worker whose own scheduler does not promote again once started
    receiver = ChaosReceiver(latency=0.7)
    env = worker_env(
        redis_url,
        receiver.url,
        LIMECHAT_VISIBILITY_TIMEOUT="4",
        LIMECHAT_TIMEOUT_SECONDS="3",
        LIMECHAT_WORKER_CONCURRENCY="1",
        LOG_LEVEL="INFO",
    )
    slow_scheduler = {**env, "LIMECHAT_SCHEDULER_INTERVAL_SECONDS": "1000"}
    first = WorkerProcess(slow_scheduler).start()
    second: WorkerProcess | None = None
    seqs = list(range(10))
    try:
        # When one message carries ten events (about 7 s of POSTs)
        producer.send_events([{"event": "e", "phone": PHONE, "data": {"seq": s}} for s in seqs])
        # Then the worker stops after about 2 s and says how many it handed over
        match = wait_for(lambda: HANDED.search(first.text()), 30, "the hand-off log line")
        handed = int(match.group(1))
        assert 0 < handed < len(seqs), first.text()[-3000:]
        # and they are parked, attempts untouched, the message itself acknowledged
        wait_for(lambda: nothing_held(r), 10, "the batch's message to be acknowledged")
        entries = parked(r, 100)
        assert len(entries) == handed, entries
        assert all(e["attempts"] == 0 for e in entries), entries
        delivered_first = receiver.delivered_seqs()
        assert len(delivered_first) == len(seqs) - handed
        # When a scheduler runs (every worker has one)
        second = WorkerProcess(env).start()
        wait_for(lambda: receiver.delivered_seqs() == set(seqs), 30, "every event delivered")
        wait_for(lambda: nothing_held(r) and not parked(r, 100), 10, "nothing left held")
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
        receiver.stop()
    # Then every event reached LimeChat exactly once
    assert dict(receiver.deliveries()) == dict.fromkeys(seqs, 1)
    assert not dead_seqs(r)
