"""Messages another writer made: Celery never sees their odd headers and options.

Celery reads many headers and options of a task message; a hostile review found values that
kill the worker (``stamped_headers: 5``, a ``body_encoding`` other than base64, an item with a
byte-order mark), that lose the message (``delivery_info: "x"`` in the options, a body with a
byte-order mark), that keep it forever in the unacked hash (``shadow: {}``), or that lose it
at a crash (another queue's routing key; two messages sharing a delivery tag). The worker now
hands Celery only messages of its own making (``worker/intake.py``): each case below must end
with its event delivered (or, unreadable, dead-lettered), the good event after it delivered,
and the worker alive.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from producer import Producer, contract, wire
from producer.envelope import new_event
from tests.helpers import WorkerProcess, wait_for, worker_env

from .receiver import Answer, ChaosReceiver, Received, Stall
from .support import PHONE, dead_letters

pytestmark = pytest.mark.integration

Message = dict[str, Any]


def carrying(seq: str, change: Callable[[Message, list[Any]], object] | None = None) -> bytes:
    """A real message carrying one event (``data.seq``), then changed; as bytes."""
    event = new_event("order_placed", PHONE, PHONE, {"seq": seq}, None, event_id=f"evt-{seq}")
    message: Message = json.loads(wire.encode_message([event]))
    body: list[Any] = json.loads(base64.b64decode(message["body"]))
    raw = change(message, body) if change else None
    if isinstance(raw, bytes):
        return raw
    if message["properties"].get("body_encoding") == "base64":
        message["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(message).encode()


def header(key: str, value: Any) -> Callable[[Message, list[Any]], object]:
    return lambda m, b: m["headers"].__setitem__(key, value)


def option(key: str, value: Any) -> Callable[[Message, list[Any]], object]:
    return lambda m, b: b[2].__setitem__(key, value)


def body_encoding(value: Any) -> Callable[[Message, list[Any]], object]:
    def change(m: Message, b: list[Any]) -> None:
        m["properties"]["body_encoding"] = value
        m["body"] = json.dumps(b)

    return change


def whole_item(transform: Callable[[bytes], bytes]) -> Callable[[Message, list[Any]], object]:
    def change(m: Message, b: list[Any]) -> bytes:
        m["body"] = base64.b64encode(json.dumps(b).encode()).decode()
        return transform(json.dumps(m).encode())

    return change


def body_bytes(transform: Callable[[bytes], bytes]) -> Callable[[Message, list[Any]], object]:
    def change(m: Message, b: list[Any]) -> bytes:
        m["body"] = base64.b64encode(transform(json.dumps(b).encode())).decode()
        return json.dumps(m).encode()

    return change


def escaped_type_marker(m: Message, b: list[Any]) -> bytes:
    m["headers"]["origin"] = {"__type__": "nope", "__value__": 1}
    m["body"] = base64.b64encode(json.dumps(b).encode()).decode()
    return json.dumps(m).replace('"__type__"', '"\\u005f_type__"').encode()


def utf16(text: bytes) -> bytes:
    return text.decode().encode("utf-16")


BOM = b"\xef\xbb\xbf"

#: Messages whose event the worker must deliver (it rewrites the message in its own form).
REWRITTEN = {
    "stamped_headers an int": header("stamped_headers", 5),
    "stamped_headers nested": header("stamped_headers", [[1]]),
    "shadow a dict": header("shadow", {"a": 1}),
    "shadow a list": header("shadow", ["x"]),
    "retries a string": header("retries", "x"),
    "a kombu marker, key escaped": escaped_type_marker,
    "delivery_info in the options": option("delivery_info", "x"),
    "chain in the options": option("chain", ["garbage"]),
    "another queue's routing key": lambda m, b: m["properties"]["delivery_info"].update(
        routing_key="elsewhere"
    ),
    "kwargs": lambda m, b: b.__setitem__(1, {"extra": 1}),
}
#: Messages the worker cannot read: dead-lettered as malformed, never lost, never fatal.
UNREADABLE = {
    "body_encoding gzip": body_encoding("gzip"),
    "body_encoding a list": body_encoding([]),
    "body_encoding BASE64": body_encoding("BASE64"),
    "a byte-order mark before the item": whole_item(lambda t: BOM + t),
    "the item in UTF-16": whole_item(utf16),
    "a byte-order mark before the body": body_bytes(lambda t: BOM + t),
    "the body in UTF-16": body_bytes(utf16),
}


@pytest.fixture
def site(redis_url: str, chaos: ChaosReceiver) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(worker_env(redis_url, chaos.url)).start()
    yield worker
    # (SIGKILL, not a warm stop: the tests have checked all they check by now, and a warm
    # stop, which nothing here asserts on, costs ~1.2 s per test)
    worker.kill()


@pytest.mark.parametrize("case", sorted(REWRITTEN))
def test_an_odd_message_is_rewritten_and_its_event_delivered(
    case: str, site: WorkerProcess, chaos: ChaosReceiver, r: redis.Redis, producer: Producer
) -> None:
    r.lpush(contract.QUEUE, carrying("odd", REWRITTEN[case]))
    producer.send_event("order_placed", phone=PHONE, data={"seq": "after"})
    wait_for(lambda: chaos.delivered_seqs() >= {"odd", "after"}, 20, "both events delivered")
    wait_for(lambda: not r.hlen(contract.UNACKED), 20, "nothing left unacknowledged")
    assert site.proc is not None and site.proc.poll() is None, site.text()[-3000:]
    assert not r.exists("elsewhere") and not dead_letters(r)


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_an_unreadable_message_is_dead_lettered_and_the_worker_goes_on(
    case: str, site: WorkerProcess, chaos: ChaosReceiver, r: redis.Redis, producer: Producer
) -> None:
    r.lpush(contract.QUEUE, carrying("odd", UNREADABLE[case]))
    producer.send_event("order_placed", phone=PHONE, data={"seq": "after"})
    wait_for(lambda: "after" in chaos.delivered_seqs(), 20, "the good event")
    wait_for(lambda: len(dead_letters(r)) == 1, 20, "the dead letter")
    [entry] = dead_letters(r)
    assert entry["reason"] == "malformed" and entry["error"], entry
    assert site.proc is not None and site.proc.poll() is None, site.text()[-3000:]
    assert "odd" not in chaos.delivered_seqs()


# --- at a crash ------------------------------------------------------------------------------


def stall(seqs: set[str]) -> Callable[[Received], Any]:
    """Hold the first request of each of ``seqs`` (in flight at the kill); answer the rest."""
    held: set[str] = set()

    def script(req: Received) -> Any:
        if req.seq in seqs and req.seq not in held:
            held.add(req.seq)
            return Stall(60)
        return Answer()

    return script


def crash_then_recover(
    redis_url: str, chaos: ChaosReceiver, r: redis.Redis, items: list[bytes], delivered: set[str]
) -> WorkerProcess:
    """Push ``items``; once ``delivered`` arrived and one POST is in flight, SIGKILL the worker
    and start another."""
    env = worker_env(
        redis_url, chaos.url, LIMECHAT_VISIBILITY_TIMEOUT="3", LIMECHAT_TIMEOUT_SECONDS="60"
    )
    first = WorkerProcess(env).start()
    for item in items:
        r.lpush(contract.QUEUE, item)
    wait_for(
        lambda: chaos.in_progress == 1 and delivered <= chaos.delivered_seqs(),
        20,
        "a POST in flight, the others delivered",
    )
    wait_for(lambda: r.hlen(contract.UNACKED) <= 1, 10, "the delivered ones acknowledged")
    first.kill()
    return WorkerProcess(env).start()


def test_another_queues_routing_key_still_comes_back_here_after_a_crash(
    redis_url: str, chaos: ChaosReceiver, r: redis.Redis
) -> None:
    # (kombu's restore pushed it to the list its routing key named, which nobody consumes)
    chaos.script = stall({"elsewhere"})
    item = carrying("elsewhere", REWRITTEN["another queue's routing key"])
    second = crash_then_recover(redis_url, chaos, r, [item], delivered=set())
    try:
        wait_for(lambda: "elsewhere" in chaos.delivered_seqs(), 30, "the event, again")
        assert not r.exists("elsewhere")
    finally:
        second.stop()


def test_two_messages_sharing_a_delivery_tag_both_survive_a_crash(
    redis_url: str, chaos: ChaosReceiver, r: redis.Redis
) -> None:
    # (one unacked record for both: acknowledging A deleted B's, and B was lost at the kill)
    chaos.script = stall({"B"})

    def tag_1(m: Message, b: list[Any]) -> None:
        m["properties"]["delivery_tag"] = "1"

    items = [carrying("B", tag_1), carrying("A", tag_1)]  # (B is taken first)
    second = crash_then_recover(redis_url, chaos, r, items, delivered={"A"})
    try:
        wait_for(lambda: "B" in chaos.delivered_seqs(), 30, "B, delivered again")
    finally:
        second.stop()
