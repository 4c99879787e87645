"""A batch handed to the scheduler never sends again what LimeChat already has.

A redelivered batch reads the delivered markers; if it then runs past half the visibility
timeout, it hands its unstarted events to the scheduler. Those behind the hand-off point whose
marker is set must stay behind, and what the scheduler promotes is read against the markers
too (before the fix both were sent again).
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from producer import contract, wire
from producer.envelope import new_event
from tests.chaos.receiver import Answer, ChaosReceiver, Received
from tests.helpers import running_worker, wait_for, worker_env

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def slow_first(received: Received) -> Answer:
    if received.seq == 1:
        time.sleep(2.5)  # past half the visibility timeout (2 s)
    return Answer()


def test_a_handed_off_batch_skips_events_limechat_already_has(
    redis_url: str, r: redis.Redis
) -> None:
    # Given a redelivered batch: a slow event, an unstarted one, and one LimeChat already has
    events = [new_event("order_placed", PHONE, PHONE, {"seq": seq}, None) for seq in (1, 2, 3)]
    r.set(contract.delivered_key(events[2]["id"]), "1", ex=60)
    message = json.loads(wire.encode_message(events, redelivered=True))
    r.lpush(contract.QUEUE, json.dumps(message))
    receiver = ChaosReceiver(slow_first)
    env = worker_env(
        redis_url, receiver.url, LIMECHAT_VISIBILITY_TIMEOUT="4", LIMECHAT_TIMEOUT_SECONDS="5"
    )
    try:
        with running_worker(env) as worker:
            # When the first POST outlasts the batch's time, the rest goes to the scheduler
            wait_for(lambda: worker.saw("handed to the scheduler"), 20, "the hand-off")
            wait_for(lambda: receiver.delivered_seqs() >= {1, 2}, 20, "events 1 and 2")
            wait_for(lambda: not r.zcard(contract.RETRY_DUE), 10, "the schedule to empty")
            time.sleep(1)  # (room for a wrong extra request to arrive)
        # Then event 3, whose marker is set, was never sent again; 1 and 2 once each
        assert receiver.deliveries() == {1: 1, 2: 1}, receiver.deliveries()
        assert "1 events handed to the scheduler" in worker.text()
    finally:
        receiver.stop()
