"""End to end: the producer, the real Redis, a real Celery worker process, a real HTTP receiver."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter

import pytest
import redis

from producer import Producer, contract, wire
from producer.envelope import new_event
from tests.chaos.support import queued_events
from tests.helpers import (
    TEST_TOKEN,
    WorkerProcess,
    run_cli,
    running_worker,
    wait_for,
    worker_env,
)
from worker import markers
from worker.deadletter import DeadLetters
from worker.sandbox import Reply, Request, Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"

# LimeChat's three examples, as documented (order_placed with its missing comma put back).
SEED_BODIES = [
    {
        "distinct_id": "915673412780",
        "phone": "+915673412780",
        "event": "product_view",
        "data": {
            "product_id": "65432",
            "product_name": "Cool Sneakers",
            "category": "Footwear",
            "currency": "INR",
        },
    },
    {
        "distinct_id": "915673412780",
        "phone": "+915673412780",
        "event": "order_placed",
        "data": {
            "order_id": "98765",
            "total_amount": "$199",
            "products": [
                {"product_id": "12345", "quantity": 2},
                {"product_id": "67890", "quantity": 1},
            ],
            "currency": "INR",
        },
    },
    {
        "distinct_id": "915673412780",
        "phone": "+915673412780",
        "event": "survey_completion",
        "data": {
            "survey_id": "54321",
            "completion_time": "15 minutes",
            "user_feedback": "Great survey!",
            "survey_score": "90",
        },
    },
]


def dlq(r: redis.Redis) -> list[dict[str, object]]:
    return DeadLetters(r).list()


def test_limechats_examples_arrive_as_documented(
    producer: Producer, receiver: Sandbox, env: dict[str, str]
) -> None:
    with running_worker(env):
        for body in SEED_BODIES:
            producer.send_event(
                body["event"],
                phone=body["phone"],
                distinct_id=body["distinct_id"],
                data=body["data"],
            )
        wait_for(lambda: len(receiver.accepted()) == 3, 20, "three deliveries")
    got = sorted(receiver.accepted(), key=lambda req: req.body["event"])
    assert [req.body for req in got] == sorted(SEED_BODIES, key=lambda b: b["event"])
    for req in got:
        assert req.headers["content-type"] == "application/json"
        assert req.headers["x-limechat-uat"] == TEST_TOKEN
        assert req.headers["x-fb-account-id"] == env["LIMECHAT_ACCOUNT_ID"]
        assert req.path == "/api/v1/cvf-events"
        assert json.loads(req.raw) == req.body  # one JSON document, nothing around it


def test_a_500_then_200_is_delivered_once_on_the_retry(
    producer: Producer, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    replies = [Reply(500, {"error": "boom"})]
    receiver.responder = lambda req: replies.pop(0) if replies else None
    with running_worker(env) as worker:
        event_id = producer.send_event("order_placed", phone=PHONE)
        wait_for(lambda: receiver.accepted(), 20, "the retry to be delivered")
        time.sleep(0.5)  # nothing more should arrive
        assert worker.saw(f"retry scheduled evt={event_id}")
    assert [status for _, status in receiver.requests] == [500, 200]
    assert markers.is_delivered(r, event_id)
    assert dlq(r) == []
    assert r.zcard(contract.RETRY_DUE) == 0 and r.hlen(contract.RETRY_EVENTS) == 0


def test_a_429s_retry_after_is_honoured(
    producer: Producer, receiver: Sandbox, redis_url: str
) -> None:
    replies = [Reply(429, {"error": "slow down"}, {"Retry-After": "2"})]
    receiver.responder = lambda req: replies.pop(0) if replies else None
    env = worker_env(redis_url, receiver.url, LIMECHAT_RETRY_MAX_SECONDS="10")
    with running_worker(env):
        producer.send_event("order_placed", phone=PHONE)
        wait_for(lambda: receiver.accepted(), 20, "the delivery after the 429")
    (first, status_1), (second, status_2) = receiver.requests
    assert (status_1, status_2) == (429, 200)
    # The backoff alone (base 0.05 s) would have retried within a fraction of a second.
    assert second.received_at - first.received_at >= 2.0


def test_a_400_is_dead_lettered_after_exactly_one_request(
    producer: Producer, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    receiver.responder = lambda req: Reply(400, {"error": "x" * 5000})
    with running_worker(env):
        event_id = producer.send_event("order_placed", phone=PHONE, data={"order_id": "1"})
        wait_for(lambda: dlq(r), 20, "a dead letter")
        time.sleep(0.5)
    assert len(receiver.requests) == 1
    [entry] = dlq(r)
    assert entry["event_id"] == event_id
    assert (entry["reason"], entry["status"], entry["attempts"]) == ("http_4xx", 400, 1)
    assert entry["event"]["data"] == {"order_id": "1"}
    assert len(entry["response_body"]) < 2100 and entry["response_body"].endswith("[truncated]")
    assert entry["first_attempt_at"] and entry["last_attempt_at"] and entry["dead_lettered_at"]
    assert TEST_TOKEN not in json.dumps(entry)


def test_a_401_is_dead_lettered_as_a_credentials_problem(
    producer: Producer, redis_url: str, r: redis.Redis
) -> None:
    strict = Sandbox(token="the-real-token").start()
    try:
        with running_worker(worker_env(redis_url, strict.url)):
            producer.send_event("order_placed", phone=PHONE)
            wait_for(lambda: dlq(r), 20, "a dead letter")
    finally:
        strict.stop()
    [entry] = dlq(r)
    assert (entry["reason"], entry["status"], entry["attempts"]) == ("auth", 401, 1)
    assert TEST_TOKEN not in json.dumps(entry)


def test_an_event_of_another_account_is_dead_lettered_without_a_request(
    producer: Producer, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    with running_worker(env):
        producer.send_event("order_placed", phone=PHONE, account="someone-else")
        mine = producer.send_event("order_placed", phone=PHONE, account=env["LIMECHAT_ACCOUNT_ID"])
        wait_for(lambda: dlq(r) and receiver.accepted(), 20, "one dead letter, one delivery")
    assert [e["reason"] for e in dlq(r)] == ["unknown_account"]
    assert [req.body["event"] for req in receiver.accepted()] == ["order_placed"]
    assert markers.is_delivered(r, mine)


def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_going(
    producer: Producer, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    good = new_event("order_placed", PHONE, PHONE, {}, None)
    missing_phone = {k: v for k, v in good.items() if k != "phone"} | {"id": "no-phone"}
    message = wire.encode_message([missing_phone, "just a string", good])  # type: ignore[list-item]
    r.lpush(contract.QUEUE, message)
    with running_worker(env) as worker:
        wait_for(lambda: receiver.accepted() and len(dlq(r)) == 2, 20, "two dead letters")
        producer.send_event("after", phone=PHONE)
        wait_for(lambda: len(receiver.accepted()) == 2, 20, "the next event")
        assert worker.proc is not None and worker.proc.poll() is None
    reasons = Counter(e["reason"] for e in dlq(r))
    assert reasons == {"malformed": 2}
    assert any("phone" in e["error"] for e in dlq(r))


def test_queue_items_that_are_not_our_messages_are_dead_lettered_not_fatal(
    producer: Producer, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    # Given whatever someone else may push onto our Redis list
    real = json.loads(wire.encode_message([new_event("order_placed", PHONE, PHONE, {}, None)]))
    junk = {
        "not json": "not JSON",
        "[1, 2, 3]": "no properties",
        json.dumps(
            {"body": "e30=", "headers": {"task": "other.task"}, "properties": {}}
        ): "task 'other.task'",
        json.dumps({**real, "body": "!!"}): "cannot be decoded",
        json.dumps(
            {**real, "properties": {**real["properties"], "delivery_tag": None}}
        ): "delivery_tag",
        json.dumps({**real, "headers": {**real["headers"], "eta": "2030-01-01T00:00:00"}}): "eta",
        "\xff\xfe binary": "not JSON",
    }
    for item in junk:
        r.lpush(contract.QUEUE, item)
    # When a worker meets them, then gets a real event
    with running_worker(env) as worker:
        wait_for(lambda: len(dlq(r)) == len(junk), 20, "every item in the DLQ")
        producer.send_event("after", phone=PHONE)
        wait_for(lambda: receiver.accepted(), 20, "the real event")
        assert worker.proc is not None and worker.proc.poll() is None
        assert not worker.saw("Unrecoverable error")
    # Then each is a malformed dead letter that says what arrived and why
    entries = dlq(r)
    assert {e["reason"] for e in entries} == {"malformed"}
    for item, why in junk.items():
        [entry] = [e for e in entries if e["event"]["raw"] == item]
        assert why in entry["error"], (item, entry["error"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_receiver_down_past_max_attempts_then_replay_delivers_everything(
    producer: Producer, redis_url: str, r: redis.Redis
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/cvf-events"
    ids = producer.send_events(
        [{"event": "order_placed", "phone": PHONE, "data": {"i": i}} for i in range(12)]
    )
    with running_worker(worker_env(redis_url, url, LIMECHAT_MAX_ATTEMPTS="3")):
        wait_for(lambda: len(dlq(r)) == 12, 30, "every event in the DLQ")
        entries = dlq(r)
        assert {e["event_id"] for e in entries} == set(ids)
        assert {(e["reason"], e["attempts"]) for e in entries} == {("exhausted", 3)}
        assert all("ConnectionError" in e["error"] for e in entries)

        back = Sandbox(port=port, token=TEST_TOKEN).start()
        try:
            env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
            replay = run_cli(env, "dlq", "replay", "--all", timeout=30)
            assert replay.returncode == 0, replay.stderr
            assert "replayed 12 event(s)" in replay.stdout
            wait_for(lambda: len(back.accepted()) >= 12, 30, "the replayed events")
            time.sleep(0.5)
            delivered = Counter(req.body["data"]["i"] for req in back.accepted())
        finally:
            back.stop()
    assert delivered == Counter(range(12))  # all of them, once each
    assert dlq(r) == []


def test_an_event_held_by_a_sigkilled_worker_is_delivered_after_a_restart(
    producer: Producer, receiver: Sandbox, env: dict[str, str]
) -> None:
    stall = threading.Event()
    stall.set()
    arrived: list[int] = []

    def slow(req: Request) -> Reply | None:
        if stall.is_set():
            arrived.append(req.body["data"]["i"])
            time.sleep(3)
        return None

    receiver.responder = slow
    for i in range(10):
        producer.send_event("order_placed", phone=PHONE, data={"i": i})
    first = WorkerProcess(env).start()
    try:
        wait_for(lambda: len(arrived) >= 2, 20, "deliveries in flight")
    finally:
        first.kill()
    in_flight = len(arrived)
    stall.clear()
    with running_worker(env):
        # The held messages come back after the visibility timeout (4 s here), not after
        # kombu's default hour: the deadline is generous for a busy machine, and is the bound.
        wait_for(
            lambda: {req.body["data"]["i"] for req in receiver.accepted()} >= set(range(10)),
            60,
            "every event delivered after the restart",
        )
    delivered = Counter(req.body["data"]["i"] for req in receiver.accepted())
    duplicates = sum(delivered.values()) - 10
    assert duplicates <= in_flight, delivered


def test_sigterm_mid_batch_exits_promptly_and_loses_nothing(
    producer: Producer, receiver: Sandbox, redis_url: str, r: redis.Redis
) -> None:
    """SIGTERM: each POST in flight finishes, the unstarted rest of each batch goes to the
    scheduler (not left for kombu to redeliver), the worker exits 0; the next one delivers."""

    def slow(req: Request) -> Reply | None:
        time.sleep(0.5)
        return None

    receiver.responder = slow
    # (a visibility timeout far longer than the test: nothing can come back through kombu's
    # redelivery, so what the next worker delivers is what the first handed to the scheduler)
    env = worker_env(redis_url, receiver.url, LIMECHAT_VISIBILITY_TIMEOUT="600")
    threads = int(env["LIMECHAT_WORKER_CONCURRENCY"])
    producer.send_events(
        [{"event": "order_placed", "phone": PHONE, "data": {"i": i}} for i in range(30)]
    )
    first = WorkerProcess(env).start()
    wait_for(
        lambda: len(receiver.requests) >= 2 and not r.llen(contract.QUEUE),
        20,
        "deliveries under way, every batch taken",
    )
    signalled = time.monotonic()
    # (a generous bound: a hung shutdown fails it, a slow machine does not)
    code = first.terminate(timeout=float(env["LIMECHAT_TIMEOUT_SECONDS"]) + 20)
    first.stop()
    assert code == 0, first.text()[-3000:]
    # Each thread finishes the POST it had in flight and starts at most one more (the one it
    # began before it saw the signal): the rest of its batch (10 events at 0.5 s) is not sent
    late = [req for req, _ in list(receiver.requests) if req.received_at > signalled]
    assert len(late) <= threads, len(late)
    # The unstarted rest went to the scheduler, and the messages were acknowledged: every
    # event is delivered, parked (or promoted back onto the queue) exactly once, none held
    handed = re.findall(r"shutting down: (\d+) events handed to the scheduler", first.text())
    assert handed, first.text()[-3000:]
    delivered = {req.body["data"]["i"] for req in receiver.accepted()}
    parked = r.hlen(contract.RETRY_EVENTS)
    assert sum(map(int, handed)) == parked + queued_events(r) > 0
    assert len(delivered) + parked + queued_events(r) == 30
    assert r.hlen(contract.UNACKED) == 0
    receiver.responder = None
    with running_worker(env):
        wait_for(
            lambda: {req.body["data"]["i"] for req in receiver.accepted()} >= set(range(30)),
            30,
            "every event delivered by the next worker",
        )
    assert Counter(req.body["data"]["i"] for req in receiver.accepted()) == Counter(range(30))
