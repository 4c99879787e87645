"""The producer against the real Redis: what lands on the queue, idempotency, a dead Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from producer import EnqueueError, Producer, ProducerSettings, ValidationError, contract

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def queued_events(r: redis.Redis) -> list[dict[str, object]]:
    """Every event on the queue, oldest first, decoded as a Celery worker would."""
    events = []
    for raw in reversed(r.lrange(contract.QUEUE, 0, -1)):
        message = json.loads(raw)
        assert message["headers"]["task"] == contract.TASK_DELIVER
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert kwargs == {}
        events.extend(args[0])
    return events


def test_send_event_enqueues_one_validated_event(producer: Producer, r: redis.Redis) -> None:
    event_id = producer.send_event(
        "order_placed",
        phone="+91 56734 12780",
        distinct_id="915673412780",
        data={"order_id": "98765", "currency": "INR"},
    )
    [event] = queued_events(r)
    assert event["id"] == event_id
    assert event["phone"] == PHONE
    assert event["distinct_id"] == "915673412780"
    assert event["data"] == {"order_id": "98765", "currency": "INR"}
    assert event["attempts"] == 0 and event["account"] is None


def test_an_idempotency_key_enqueues_once_and_returns_the_first_id(
    producer: Producer, r: redis.Redis
) -> None:
    first = producer.send_event("order_placed", phone=PHONE, idempotency_key="order-98765")
    again = producer.send_event("order_placed", phone=PHONE, idempotency_key="order-98765")
    other = producer.send_event("order_placed", phone=PHONE, idempotency_key="order-98766")
    assert again == first and other != first
    assert [e["id"] for e in queued_events(r)] == [first, other]
    ttl = r.ttl(contract.idempotency_key(None, "order-98765"))
    assert contract.IDEMPOTENCY_TTL_SECONDS - 5 < ttl <= contract.IDEMPOTENCY_TTL_SECONDS


def test_send_events_travels_in_batches_and_keeps_order(producer: Producer, r: redis.Redis) -> None:
    items = [{"event": "product_view", "phone": PHONE, "data": {"i": i}} for i in range(25)]
    ids = producer.send_events(items)
    assert r.llen(contract.QUEUE) == 3  # batch size 10
    events = queued_events(r)
    assert [e["id"] for e in events] == ids
    assert [e["data"]["i"] for e in events] == list(range(25))


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"event": "order placed", "phone": PHONE}, "event"),
        ({"event": "e", "phone": "915673412780"}, "phone"),
        ({"event": "e", "phone": PHONE, "data": {"x": float("nan")}}, "data.x"),
        ({"event": "e"}, "phone"),
        ({"event": "e", "phone": PHONE, "evnt": "typo"}, "evnt"),
        ("not a dict", "item"),
    ],
)
def test_one_bad_item_enqueues_nothing_and_names_index_and_field(
    producer: Producer, r: redis.Redis, bad: object, field: str
) -> None:
    items: list[object] = [{"event": "e", "phone": PHONE}] * 3
    items.insert(2, bad)
    with pytest.raises(ValidationError) as err:
        producer.send_events(items)  # type: ignore[arg-type]
    assert (err.value.index, err.value.field) == (2, field)
    assert f"item 2: {field}" in str(err.value)
    assert r.llen(contract.QUEUE) == 0


def test_a_refused_redis_is_an_enqueue_error_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    # A long timeout, so that "at once" and "after the timeout" are far apart
    timeout = 20.0
    p = Producer(
        ProducerSettings(redis_url=f"redis://:hunter2@127.0.0.1:{port}/0", enqueue_timeout=timeout)
    )
    started = time.monotonic()
    with pytest.raises(EnqueueError) as err:
        p.send_event("e", phone=PHONE)
    # Refused: no wait for the timeout (the connect alone may wait half of it)
    assert time.monotonic() - started < timeout / 4
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_redis_is_an_enqueue_error_within_the_documented_bound(silent_server: int) -> None:
    timeout = 1.0
    p = Producer(
        ProducerSettings(redis_url=f"redis://127.0.0.1:{silent_server}/0", enqueue_timeout=timeout)
    )
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="Timeout"):
        p.send_event("e", phone=PHONE)
    elapsed = time.monotonic() - started
    # The bound is the promise (a web request never hangs): about 2 x the timeout at worst,
    # with 1.5 s of slack for a busy machine; a default client would wait forever.
    assert elapsed < 2 * timeout + 1.5, elapsed


def test_ping_answers_a_readiness_probe_and_fails_like_a_send(
    redis_url: str, silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import producer
    import producer.aio

    monkeypatch.setenv("REDIS_URL", redis_url)
    producer.configure()
    producer.aio.configure()
    producer.ping()
    asyncio.run(producer.aio.ping())
    hung = f"redis://:hunter2@127.0.0.1:{silent_server}/0"
    producer.configure(redis_url=hung, enqueue_timeout=0.4)
    producer.aio.configure(redis_url=hung, enqueue_timeout=0.4)
    with pytest.raises(EnqueueError, match="Timeout") as sync_failure:
        producer.ping()
    with pytest.raises(EnqueueError) as async_failure:
        asyncio.run(producer.aio.ping())
    for failure in (sync_failure, async_failure):
        assert "hunter2" not in str(failure.value) and "***" in str(failure.value)
    producer.configure(redis_url=redis_url)
    producer.aio.configure(redis_url=redis_url)
