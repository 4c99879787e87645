"""Parked retries and their promotion, against the real Redis (no worker needed)."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis

from producer import contract
from producer.envelope import Event, new_event
from tests.helpers import wait_for
from worker.schedule import RetrySchedule

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def event(i: int) -> Event:
    e = new_event("order_placed", PHONE, PHONE, {"i": i}, None)
    e["attempts"] = 2
    return e


def queued(r: redis.Redis) -> list[Event]:
    out: list[Event] = []
    for raw in reversed(r.lrange(contract.QUEUE, 0, -1)):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        out.extend(body[0][0])
    return out


def test_events_come_back_in_batches_when_due_with_their_attempts(r: redis.Redis) -> None:
    schedule = RetrySchedule(r, batch_size=4, claim_timeout=60)
    for i in range(10):
        schedule.park(event(i), 0.0)
    schedule.park(event(99), 60.0)  # not due yet
    assert schedule.promote_due() == 10
    assert r.llen(contract.QUEUE) == 3  # 4 + 4 + 2
    back = queued(r)
    assert sorted(e["data"]["i"] for e in back) == list(range(10))
    assert {e["attempts"] for e in back} == {2}
    assert r.zcard(contract.RETRY_DUE) == 1 and r.hlen(contract.RETRY_EVENTS) == 1
    assert r.zcard(contract.RETRY_CLAIMED) == 0


def test_a_claim_abandoned_by_a_dead_scheduler_is_promoted_again(r: redis.Redis) -> None:
    # Given a scheduler that claimed due entries and died before publishing them
    dead = RetrySchedule(r, batch_size=10, claim_timeout=0.5)
    for i in range(3):
        dead.park(event(i), 0.0)
    ids, _payloads = dead._claim(
        keys=[contract.RETRY_DUE, contract.RETRY_CLAIMED, contract.RETRY_EVENTS], args=[10, 0.5]
    )
    assert len(ids) == 3 and r.zcard(contract.RETRY_CLAIMED) == 3
    assert r.llen(contract.QUEUE) == 0
    # When another scheduler runs before the claim timeout, it leaves the claim alone
    # (its own timeout, a minute: however slow the machine, the claim is younger than that)
    assert RetrySchedule(r, batch_size=10, claim_timeout=60).promote_due() == 0
    assert r.zcard(contract.RETRY_CLAIMED) == 3 and r.llen(contract.QUEUE) == 0
    # Then after the claim timeout the entries are promoted, once
    alive = RetrySchedule(r, batch_size=10, claim_timeout=0.5)
    promoted: list[int] = []
    wait_for(
        lambda: promoted.append(alive.promote_due()) or sum(promoted),
        10,
        "the abandoned claim to be promoted",
    )
    assert sum(promoted) == 3 and alive.promote_due() == 0
    assert sorted(e["data"]["i"] for e in queued(r)) == [0, 1, 2]
    assert r.zcard(contract.RETRY_CLAIMED) == 0 and r.hlen(contract.RETRY_EVENTS) == 0


def test_a_late_publish_after_the_claim_was_taken_over_publishes_nothing(r: redis.Redis) -> None:
    slow = RetrySchedule(r, batch_size=10, claim_timeout=0.2)
    slow.park(event(1), 0.0)
    ids, _ = slow._claim(
        keys=[contract.RETRY_DUE, contract.RETRY_CLAIMED, contract.RETRY_EVENTS], args=[10, 0.2]
    )
    time.sleep(0.3)
    assert RetrySchedule(r, batch_size=10, claim_timeout=0.2).promote_due() == 1
    # The slow scheduler wakes up and tries to publish its (stale) claim: refused.
    assert slow._requeue([i.decode() for i in ids], ["should-not-be-pushed"]) is False
    assert r.llen(contract.QUEUE) == 1


def test_a_bug_while_delivering_dead_letters_the_event_instead_of_losing_it(
    r: redis.Redis, redis_url: str
) -> None:
    from tests.helpers import TEST_ACCOUNT, TEST_TOKEN
    from worker.app import build_deliverer
    from worker.deadletter import DeadLetters
    from worker.settings import Settings

    settings = Settings(
        access_token=TEST_TOKEN,
        account_id=TEST_ACCOUNT,
        redis_url=redis_url,
        api_url="http://127.0.0.1:9/api/v1/cvf-events",
        rate_limit="off",
    )
    deliverer = build_deliverer(settings, r)
    broken, fine = event(1), event(2)
    broken["history"] = None  # type: ignore[typeddict-item]  # a state our code cannot handle
    deliverer.deliver_batch([broken, fine])
    [entry] = DeadLetters(r).list()
    assert entry["event_id"] == broken["id"] and entry["reason"] == "internal_error"
    assert "TypeError" in entry["error"]
    assert r.hexists(contract.RETRY_EVENTS, fine["id"])  # the next event was still handled
