"""Malformed messages placed straight on the queue: dead-lettered as ``malformed``, no crash.

Someone's script, an old producer, a bad copy-paste in redis-cli: whatever lands on
``limechat:events``, the worker must keep delivering, and the bad message must end up in the
DLQ (reason ``malformed``, saying what was wrong), not vanish.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producer import Producer, contract, wire
from producer.envelope import new_event
from tests.helpers import WorkerProcess, running_worker, wait_for

from .receiver import ChaosReceiver
from .support import PHONE, dead_letters

pytestmark = pytest.mark.integration

Message = dict[str, Any]


def task_message(marker: str, change: Callable[[Message], object] | None = None) -> bytes:
    """A real task message, as the producer writes it, carrying ``marker``; then damaged."""
    event = new_event("order_placed", PHONE, PHONE, {"seq": -1, "marker": marker}, None)
    message: Message = json.loads(wire.encode_message([event]))
    message["properties"]["correlation_id"] = marker  # findable in the dead letter's raw text
    if change is not None:
        change(message)
    return json.dumps(message).encode()


def body(args: Any, kwargs: Any = None, embed: Any = None) -> Callable[[Message], object]:
    """Replace the message body (``[args, kwargs, embed]``, base64 JSON)."""
    raw = json.dumps([args, {} if kwargs is None else kwargs, {} if embed is None else embed])
    return lambda m: m.__setitem__("body", base64.b64encode(raw.encode()).decode())


def set_in(part: str, key: str, value: Any) -> Callable[[Message], object]:
    return lambda m: m[part].__setitem__(key, value)


def drop(part: str, key: str) -> Callable[[Message], object]:
    return lambda m: m[part].pop(key)


def run_until_settled(
    worker: WorkerProcess, receiver: ChaosReceiver, r: redis.Redis, dead: int
) -> None:
    """Until the good event sent after the bad messages arrives and ``dead`` dead letters are
    in, or the worker dies; the assertions that follow say which."""

    def done() -> bool:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            return True
        return 0 in receiver.delivered_seqs() and len(dead_letters(r)) >= dead

    with contextlib.suppress(AssertionError):  # the assertions that follow say what is missing
        wait_for(done, 60, "the good event and the dead letters")


def dead_lettered(r: redis.Redis, marker: str) -> bool:
    return any(
        e["reason"] == "malformed" and marker in json.dumps(e, ensure_ascii=False)
        for e in dead_letters(r)
    )


def push_then_run(
    broken: dict[str, bytes],
    producer: Producer,
    receiver: ChaosReceiver,
    env: dict[str, str],
    r: redis.Redis,
) -> tuple[bool, str]:
    """Push the broken messages, then a good event; run a worker. (alive?, its output)."""
    for raw in broken.values():
        r.lpush(contract.QUEUE, raw)
    producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
    with running_worker({**env, "LIMECHAT_API_URL": receiver.url}) as worker:
        run_until_settled(worker, receiver, r, dead=len(broken))
        assert worker.proc is not None
        return worker.proc.poll() is None, worker.text()


# What worker/transport.py catches before kombu or Celery sees it, and what our task checks.
HANDLED = {
    "not-JSON": b"LPUSH limechat:events not-JSON",
    "JSON-not-a-message": b'["JSON-not-a-message", 1, 2]',
    "body-not-base64": task_message(
        "body-not-base64", set_in("properties", "body_encoding", "x")
    ).replace(b'"body": "', b'"body": "!!!', 1),
    "body-not-JSON": task_message("body-not-JSON", lambda m: m.__setitem__("body", "Ym9keS1ub3Q=")),
    "unknown-task": task_message("unknown-task", set_in("headers", "task", "nope")),
    "no-headers": task_message("no-headers", lambda m: m.pop("headers")),
    "args-not-a-list": task_message("args-not-a-list", body(["args-not-a-list"])),
    "keyword-arguments": task_message("keyword-arguments", body([], {"x": "keyword-arguments"})),
    "two-arguments": task_message("two-arguments", body([["two-arguments"], []])),
    "embed-not-a-dict": task_message("embed-not-a-dict", body([["embed-not-a-dict"]], {}, [])),
}


def test_junk_on_the_queue_is_dead_lettered_and_the_worker_keeps_delivering(
    producer: Producer, chaos: ChaosReceiver, env: dict[str, str], r: redis.Redis
) -> None:
    """Not JSON, not a message, undecodable body, unknown task, wrong arguments: all DLQ'd."""
    alive, output = push_then_run(HANDLED, producer, chaos, env, r)
    assert alive, output[-2000:]
    assert 0 in chaos.delivered_seqs()
    missing = [kind for kind in HANDLED if not dead_lettered(r, kind)]
    assert not missing, (missing, [e["error"] for e in dead_letters(r)])
    assert {e["reason"] for e in dead_letters(r)} == {"malformed"}
    assert all(e["error"] for e in dead_letters(r))  # each says what was wrong


def test_bad_events_in_a_batch_are_dead_lettered_one_by_one_and_the_rest_delivered(
    producer: Producer, chaos: ChaosReceiver, env: dict[str, str], r: redis.Redis
) -> None:
    """Wrong types or missing fields in one event of a batch do not cost the others."""
    good = new_event("order_placed", PHONE, PHONE, {"seq": 1}, None)
    bad_events: list[Any] = [
        "just a string",
        {**good, "id": "wrong-attempts", "attempts": "3"},
        {**good, "id": "data-a-list", "data": [1, 2]},
        {**good, "id": "account-a-number", "account": 5},
        {k: v for k, v in good.items() if k != "phone"} | {"id": "missing-phone"},
    ]
    batch = task_message("batch", body([[*bad_events, good]]))
    alive, output = push_then_run({"batch": batch}, producer, chaos, env, r)
    assert alive, output[-2000:]
    wait_for(lambda: len(dead_letters(r)) == len(bad_events), 30, "every bad event dead-lettered")
    # (the good event comes last in its batch: it may still be on its way)
    wait_for(lambda: chaos.delivered_seqs() == {0, 1}, 30, "the good events delivered")
    errors = {e["event_id"]: e["error"] for e in dead_letters(r)}
    assert {e["reason"] for e in dead_letters(r)} == {"malformed"}
    assert "'attempts'" in errors["wrong-attempts"] and "'data'" in errors["data-a-list"]
    assert "'account'" in errors["account-a-number"] and "'phone'" in errors["missing-phone"]


# Messages kombu or Celery would drop, crash or loop on (worker/vetting.py refuses them).
DROPPED = {
    "no-delivery-tag": task_message("no-delivery-tag", drop("properties", "delivery_tag")),
    "no-delivery-info": task_message("no-delivery-info", drop("properties", "delivery_info")),
    "pickle-content-type": task_message(
        "pickle-content-type",
        lambda m: m.__setitem__("content-type", "application/x-python-serialize"),
    ),
    "args-a-number": task_message("args-a-number", body(5)),
    "kwargs-a-list": task_message("kwargs-a-list", body([], [])),
    "eta-not-a-date": task_message("eta-not-a-date", set_in("headers", "eta", "not a date")),
    "expired": task_message("expired", set_in("headers", "expires", "2000-01-01T00:00:00")),
}
WORSE = {
    # the worker exits ("Unrecoverable error"), with exit code 0
    "delivery-tag-a-list": task_message(
        "delivery-tag-a-list", set_in("properties", "delivery_tag", [1])
    ),
    "timelimit-not-a-pair": task_message(
        "timelimit-not-a-pair", set_in("headers", "timelimit", "x")
    ),
    # the consumer reconnects, gets it again, and so on: nothing after it is delivered
    "no-task-id": task_message("no-task-id", drop("headers", "id")),
}


@pytest.mark.parametrize(
    "broken",
    [DROPPED, *({kind: raw} for kind, raw in WORSE.items())],
    ids=["dropped-by-celery", *WORSE],
)
def test_envelopes_kombu_or_celery_cannot_handle_are_dead_lettered_too(
    broken: dict[str, bytes],
    producer: Producer,
    chaos: ChaosReceiver,
    env: dict[str, str],
    r: redis.Redis,
) -> None:
    alive, output = push_then_run(broken, producer, chaos, env, r)
    assert alive, f"the worker died:\n{output[-1500:]}"
    assert 0 in chaos.delivered_seqs(), "the good event after them was not delivered"
    missing = [kind for kind in broken if not dead_lettered(r, kind)]
    assert not missing, f"not in the DLQ: {missing}"
