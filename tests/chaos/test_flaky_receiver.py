"""Scenario 1: a receiver that fails almost half the time still gets every event, once."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from itertools import pairwise

import pytest
import redis

from producer import Producer
from tests.helpers import running_worker, worker_env

from .figures import record
from .receiver import Action, Answer, ChaosReceiver, Received, Reset, Script
from .support import send_numbered, wait_settled

pytestmark = pytest.mark.integration

EVENTS = 1000
RETRY_AFTER = 1  # seconds, as the 429s say
RETRY_CAP = 0.3  # LIMECHAT_RETRY_MAX_SECONDS: also the longest Retry-After honoured


def flaky(seed: int) -> Script:
    """30% 500s, 10% 429 with ``Retry-After``, 5% connection resets, the rest 200."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def script(_: Received) -> Action:
        with lock:
            x = rng.random()
        if x < 0.30:
            return Answer(500, {"error": "internal error"})
        if x < 0.40:
            return Answer(429, {"error": "slow down"}, (("Retry-After", str(RETRY_AFTER)),))
        if x < 0.45:
            return Reset()
        return Answer()

    return script


def test_a_flaky_receiver_gets_all_1000_events_and_nothing_is_dead_lettered(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """30% 500s, 10% 429 with Retry-After, 5% resets: all delivered, none dead, no duplicates."""
    # Given a receiver failing 45% of requests, and enough attempts that an event failing
    # every one of them is a one-in-ten-million chance (0.45 ** 25)
    chaos.script = flaky(seed=20261126)
    env = worker_env(
        redis_url,
        chaos.url,
        LIMECHAT_MAX_ATTEMPTS="25",
        LIMECHAT_RETRY_MAX_SECONDS=str(RETRY_CAP),
        # No crash here: a generous visibility timeout keeps a slow moment on a busy machine
        # from handing a message to a second thread, so any duplicate would be a bug.
        LIMECHAT_VISIBILITY_TIMEOUT="60",
    )
    seqs = range(EVENTS)
    with running_worker(env):
        # When 1,000 events are sent, half one by one and half in batches
        started = time.monotonic()
        for seq in range(EVENTS // 2):
            producer.send_event("order_placed", phone="+915673412780", data={"seq": seq})
        send_numbered(producer, range(EVENTS // 2, EVENTS))
        tally = wait_settled(seqs, chaos, r, 120, "every event delivered")
        took = time.monotonic() - started

    # Then every one was delivered, none dead-lettered, none twice
    outcomes = chaos.outcomes()
    assert (tally.delivered, tally.dead_lettered, tally.missing) == (EVENTS, 0, frozenset())
    assert tally.duplicates == 0, tally
    # ...through the failures it was meant to go through
    assert outcomes["500"] > 200 and outcomes["429"] > 60 and outcomes["reset"] > 30, outcomes
    # And after a 429 the event waited at least its Retry-After (capped at the configured
    # maximum) before its next attempt: the backoff alone would often have retried sooner.
    by_seq: dict[int, list[Received]] = defaultdict(list)
    for req in chaos.snapshot():
        by_seq[req.seq].append(req)
    gaps = [
        later.at - req.at
        for attempts in by_seq.values()
        for req, later in pairwise(attempts)
        if req.outcome == "429"
    ]
    assert gaps and min(gaps) >= RETRY_CAP - 0.05, min(gaps)
    record(
        "1 flaky receiver",
        events=EVENTS,
        requests=sum(outcomes.values()),
        outcomes=dict(outcomes),
        delivered=tally.delivered,
        duplicates=tally.duplicates,
        dead_lettered=tally.dead_lettered,
        seconds_to_deliver_all=round(took, 2),
        shortest_wait_after_429=round(min(gaps), 3),
    )
