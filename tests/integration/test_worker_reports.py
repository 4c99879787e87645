"""What a real worker reports, through Celery: Sentry events, ``stats``, ``internal_error``.

test_operations.py and test_schedule.py check the same reports on a deliverer run in the test's
own process, without Celery; these run ``limechat-events worker`` (with faults injected where
a receiver cannot cause them: tests/integration/faulty_worker.py) and read what it reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producer import Producer, contract, wire
from tests.helpers import (
    TEST_ACCOUNT,
    SentryIngest,
    WorkerProcess,
    run_cli,
    wait_for,
    worker_env,
)
from worker.deadletter import DeadLetters
from worker.sandbox import Reply, Request, Sandbox
from worker.stats import snapshot

pytestmark = pytest.mark.integration

PHONE = "+915673412780"
FAULTY = ["-m", "tests.integration.faulty_worker"]


def by_event_name(flaky_failures: int = 1) -> Any:
    """The receiver's answers by event name: the scenarios of a day in production."""
    flaky = [Reply(500, {"error": "hiccup"})] * flaky_failures

    def respond(req: Request) -> Reply | None:
        name = req.body["event"]
        if name == "flaky" and flaky:
            return flaky.pop()
        if name == "refused":
            return Reply(400, {"error": "bad data"})
        if name == "unauthorised":
            return Reply(401, {"error": "token expired"})
        if name == "down":
            return Reply(503, {"error": "maintenance"})
        if name == "throttled":
            return Reply(429, {"error": "slow down"}, {"Retry-After": "30"})
        return None

    return respond


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    server = SentryIngest()
    yield server
    server.stop()


def accepted_names(receiver: Sandbox) -> list[str]:
    return sorted(req.body["event"] for req in receiver.accepted())


def posts_of(receiver: Sandbox, name: str) -> int:
    return sum(1 for req, _ in list(receiver.requests) if req.body["event"] == name)


def test_a_real_worker_reports_each_dead_letter_to_sentry_once_and_no_retry_or_reject(
    producer: Producer,
    receiver: Sandbox,
    redis_url: str,
    r: redis.Redis,
    ingest: SentryIngest,
) -> None:
    # Given a worker reporting to a local Sentry, its second attempt its last
    receiver.responder = by_event_name()
    env = worker_env(redis_url, receiver.url, SENTRY_DSN=ingest.dsn, LIMECHAT_MAX_ATTEMPTS="2")
    worker = WorkerProcess(env, FAULTY).start()
    try:
        # When events go through success, a retry, a Reject (a Redis error while recording:
        # the message is handed back), 400, 401, exhaustion and a bug of ours
        for name, data in [
            ("order_placed", {}),
            ("flaky", {}),
            ("hiccup", {"inject": "redis_once"}),
            ("refused", {}),
            ("unauthorised", {}),
            ("down", {}),
            ("buggy", {"inject": "bug"}),
        ]:
            producer.send_event(name, phone=PHONE, data=data)
        wait_for(lambda: DeadLetters(r).count() == 4, 30, "four dead letters")
        wait_for(lambda: len(receiver.accepted()) == 3, 30, "three deliveries")
        # ...and a message comes again carrying an event already dead-lettered (as after a
        # crash): dead-lettered again, it is not reported again
        refused = next(e for e in DeadLetters(r).list() if e["reason"] == "http_4xx")
        r.lpush(contract.QUEUE, wire.encode_message([refused["event"]], redelivered=True))
        wait_for(lambda: posts_of(receiver, "refused") == 2, 30, "the refused event again")
        wait_for(lambda: not r.llen(contract.QUEUE) and not r.hlen(contract.UNACKED), 30, "idle")
    finally:
        worker.stop()  # sentry-sdk sends what it holds as the process exits
    assert worker.proc is not None and worker.proc.returncode == 0, worker.text()[-3000:]
    assert worker.saw("Redis failed mid-delivery") and worker.saw("injected: Redis went away")
    assert accepted_names(receiver) == ["flaky", "hiccup", "order_placed"]

    # Then Sentry got one event per dead letter, and nothing for the retry or the Reject
    events = ingest.events()
    reasons = sorted(e["tags"]["reason"] for e in events)
    assert reasons == ["auth", "exhausted", "http_4xx", "internal_error"], json.dumps(events)[:3000]
    names = {e["tags"]["reason"]: e["tags"]["event_name"] for e in events}
    assert names == {
        "auth": "unauthorised",
        "exhausted": "down",
        "http_4xx": "refused",
        "internal_error": "buggy",
    }
    levels = {e["tags"]["reason"]: e["level"] for e in events}
    assert levels == {
        "auth": "error",
        "exhausted": "warning",
        "http_4xx": "warning",
        "internal_error": "warning",
    }
    # (a Reject or any other exception reported by Sentry's Celery integration would be an
    # event with an exception; every one here is a dead letter's message)
    assert not [e for e in events if "exception" in e], json.dumps(events)[:3000]


def test_stats_count_what_a_real_worker_did_and_show_its_pause(
    producer: Producer, receiver: Sandbox, redis_url: str, r: redis.Redis
) -> None:
    # Given a worker with the rate limit on, its second attempt its last
    receiver.responder = by_event_name()
    env = worker_env(
        redis_url,
        receiver.url,
        LIMECHAT_MAX_ATTEMPTS="2",
        LIMECHAT_RATE_LIMIT="50/s",
        LIMECHAT_RETRY_MAX_SECONDS="60",
    )
    expected: dict[str, Any] = {
        "counters": {"delivered": 3, "retried": 2, "dead_lettered": 2, "dlq_trimmed": 0},
        "by_event": {
            "down": {"retried": 1, "dead_lettered": 1},
            "flaky": {"retried": 1, "delivered": 1},
            "order_placed": {"delivered": 2},
            "refused": {"dead_lettered": 1},
        },
        "by_status": {"200": 3, "400": 1, "500": 1, "503": 2},
    }

    def counted() -> dict[str, Any]:
        now = snapshot(r, TEST_ACCOUNT, None)
        return {key: now[key] for key in expected}

    worker = WorkerProcess(env).start()
    try:
        # When it delivers, retries, dead-letters...
        for name in ("order_placed", "order_placed", "refused", "down", "flaky"):
            producer.send_event(name, phone=PHONE)
        wait_for(lambda: counted() == expected, 30, f"the counters to reach {expected}")
        # ...and then gets a 429 asking for 30 s
        producer.send_event("throttled", phone=PHONE)
        wait_for(lambda: "429" in counted()["by_status"], 30, "the 429")
        wait_for(lambda: not r.hlen(contract.UNACKED), 30, "its message acknowledged")
        # Then `limechat-events stats` (its own process) shows all of it
        cli_env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
        cli_env.update(LIMECHAT_ACCOUNT_ID=TEST_ACCOUNT, LIMECHAT_RATE_LIMIT="50/s")
        shown = run_cli(cli_env, "stats", "--json")
        text = run_cli(cli_env, "stats")
        listed = run_cli(cli_env, "retries", "list", "--json")
    finally:
        worker.stop()
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["counters"] == {**expected["counters"], "retried": 3}  # the 429 is a retry
    assert data["by_event"] == {**expected["by_event"], "throttled": {"retried": 1}}
    assert data["by_status"] == {**expected["by_status"], "429": 1}
    assert data["dlq"] == {"depth": 2, "by_reason": {"exhausted": 1, "http_4xx": 1}}
    assert data["queue"] == {"waiting": 0, "in_flight": 0, "oldest_age_seconds": 0}
    assert data["retries"]["parked"] == 1 and data["workers_alive"] == 1
    assert 0 < data["rate_limit"]["paused_for_seconds"] <= 30
    assert "PAUSED for" in text.stdout and "dlq:        2 (exhausted 1, http_4xx 1)" in text.stdout
    parked = [(e["event"], e["why"]) for e in json.loads(listed.stdout)]
    assert parked == [("throttled", "status 429")]


def test_a_bug_on_one_event_in_a_real_worker_dead_letters_it_and_delivers_the_rest(
    producer: Producer, receiver: Sandbox, redis_url: str, r: redis.Redis
) -> None:
    # Given a worker that has a bug with one event (tests/integration/faulty_worker.py)
    env = worker_env(redis_url, receiver.url)
    worker = WorkerProcess(env, FAULTY).start()
    try:
        # When it gets a batch message with that event between two others
        ids = producer.send_events(
            [
                {"event": "order_placed", "phone": PHONE, "data": {"n": 1}},
                {"event": "order_placed", "phone": PHONE, "data": {"inject": "bug"}},
                {"event": "order_placed", "phone": PHONE, "data": {"n": 3}},
            ]
        )
        wait_for(lambda: DeadLetters(r).count() == 1, 30, "the dead letter")
        wait_for(lambda: len(receiver.accepted()) == 2, 30, "the two other events")
        wait_for(lambda: not r.hlen(contract.UNACKED), 30, "the message acknowledged")
        alive = worker.proc is not None and worker.proc.poll() is None
    finally:
        worker.stop()
    # Then that event is an internal_error dead letter saying what went wrong, once
    [entry] = DeadLetters(r).list()
    assert (entry["event_id"], entry["reason"]) == (ids[1], "internal_error")
    assert entry["error"] == "RuntimeError: injected: a bug while handling this event"
    assert worker.saw(f"internal error on evt={ids[1]}")
    # ...the rest of its batch is delivered, the worker lives on, nothing is left held
    assert sorted(req.body["data"].get("n") for req in receiver.accepted()) == [1, 3]
    assert alive, worker.text()[-3000:]
    assert r.llen(contract.QUEUE) == 0 and r.hlen(contract.UNACKED) == 0
    counters = snapshot(r, None, None)["counters"]
    assert (counters["delivered"], counters["dead_lettered"]) == (2, 1)
