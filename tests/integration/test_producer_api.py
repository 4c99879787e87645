"""The Python API as the README shows it: the module-level functions, ``producer.configure()``,
idempotency per account, every documented limit at its boundary, and the enqueue timeout
taken from the environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import producer as producer_module
from producer import EnqueueError, Producer, ProducerSettings, ValidationError
from tests.helpers import ROOT
from tests.observe import queued_events, queued_messages

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


@pytest.fixture
def process_wide(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process-wide producer is ours for the test, and left on the test database after."""
    for name in list(os.environ):
        if name.startswith("LIMECHAT_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    yield
    producer_module.configure(ProducerSettings(redis_url=redis_url))


def test_module_level_send_event_and_send_events_use_the_environment_on_first_use(
    redis_url: str, r: redis.Redis
) -> None:
    """A fresh process: ``from producer import send_event`` needs nothing but the environment."""
    script = (
        "import json\n"
        "from producer import send_event, send_events\n"
        f"one = send_event('order_placed', phone={PHONE!r}, data={{'order_id': '1'}})\n"
        f"many = send_events([{{'event': 'product_view', 'phone': {PHONE!r},"
        " 'data': {'i': i}} for i in range(5)])\n"
        "print(json.dumps([one, many]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMECHAT_")}
    env.update(REDIS_URL=redis_url, LIMECHAT_BATCH_SIZE="2")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    one, many = json.loads(done.stdout)
    events = queued_events(r)
    assert [e["id"] for e in events] == [one, *many]
    assert events[0]["event"] == "order_placed" and events[0]["data"] == {"order_id": "1"}
    assert [e["data"]["i"] for e in events[1:]] == list(range(5))
    # LIMECHAT_BATCH_SIZE=2 from the environment: one message, then 5 events in 3 messages
    assert queued_messages(r) == 1 + 3


def test_configure_takes_the_environment_then_the_overrides(
    process_wide: None, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an environment naming a Redis where nothing listens, and a batch size of 4
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("LIMECHAT_BATCH_SIZE", "4")
    # When configure() overrides only the Redis URL
    configured = producer_module.configure(redis_url=redis_url)
    assert isinstance(configured, Producer)
    # Then the module-level functions send through it: the URL overridden, the batch size
    # from the environment
    first = producer_module.send_event("order_placed", phone=PHONE)
    ids = producer_module.send_events([{"event": "product_view", "phone": PHONE}] * 9)
    assert [e["id"] for e in queued_events(r)] == [first, *ids]
    assert queued_messages(r) == 1 + 3  # 9 events in batches of 4
    # And a second configure() replaces the producer, overriding the batch size too
    r.flushdb()
    producer_module.configure(redis_url=redis_url, batch_size=9)
    producer_module.send_events([{"event": "product_view", "phone": PHONE}] * 9)
    assert queued_messages(r) == 1
    # Without an override the environment's (dead) Redis is used, and says so
    producer_module.configure()
    with pytest.raises(EnqueueError, match=re.escape("127.0.0.1:1/")):
        producer_module.send_event("order_placed", phone=PHONE)


def test_an_idempotency_key_is_remembered_per_account(producer: Producer, r: redis.Redis) -> None:
    a1 = producer.send_event("order_placed", phone=PHONE, account="acct-a", idempotency_key="k-1")
    b1 = producer.send_event("order_placed", phone=PHONE, account="acct-b", idempotency_key="k-1")
    a2 = producer.send_event("order_placed", phone=PHONE, account="acct-a", idempotency_key="k-1")
    b2 = producer.send_event("order_placed", phone=PHONE, account="acct-b", idempotency_key="k-1")
    assert a1 != b1, "the same key under two accounts must enqueue two events"
    assert (a2, b2) == (a1, b1), "the same key under one account must return the first id"
    events = queued_events(r)
    assert [(e["id"], e["account"]) for e in events] == [(a1, "acct-a"), (b1, "acct-b")]


# --- the documented limits, at the boundary -------------------------------------------------


def phone_of_length(n: int) -> str:
    """A valid Indian number written with ``n`` characters (spaces between the parts)."""
    return "+91" + " " * (n - 13) + "5673412780"


def data_of_bytes(n: int, char: str = "x") -> dict[str, str]:
    """A data object whose JSON is ``n`` bytes (compact, UTF-8): ``{"k":"..."}``."""
    width = len(char.encode("utf-8"))
    filler, rest = divmod(n - len('{"k":""}'), width)
    return {"k": char * filler + "x" * rest}


LIMITS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("event", {"event": "e" * 128}, {"event": "e" * 129}),
    ("distinct_id", {"distinct_id": "d" * 256}, {"distinct_id": "d" * 257}),
    ("distinct_id", {"distinct_id": int("9" * 256)}, {"distinct_id": int("9" * 257)}),
    ("phone", {"phone": phone_of_length(32)}, {"phone": phone_of_length(33)}),
    ("account", {"account": "a" * 128}, {"account": "a" * 129}),
    ("idempotency_key", {"idempotency_key": "k" * 256}, {"idempotency_key": "k" * 257}),
    ("data", {"data": data_of_bytes(65536)}, {"data": data_of_bytes(65537)}),
    ("data", {"data": data_of_bytes(65536, "é")}, {"data": data_of_bytes(65537, "é")}),
]


@pytest.mark.parametrize(
    ("field", "at_limit", "over_limit"),
    LIMITS,
    ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(LIMITS)],
)
def test_each_documented_limit_is_accepted_at_the_limit_and_refused_one_past_it(
    producer: Producer, r: redis.Redis, field: str, at_limit: dict[str, Any], over_limit: Any
) -> None:
    fields: dict[str, Any] = {"event": "order_placed", "phone": PHONE}
    event_id = producer.send_event(**{**fields, **at_limit})
    [event] = queued_events(r)
    assert event["id"] == event_id
    if field in ("event", "distinct_id", "account", "data"):
        assert event[field] == (str(at_limit[field]) if field == "distinct_id" else at_limit[field])
    if field == "phone":
        assert event["phone"] == PHONE  # sent in E.164
    r.flushdb()
    with pytest.raises(ValidationError) as err:
        producer.send_event(**{**fields, **over_limit})
    assert err.value.field == field
    assert queued_messages(r) == 0


def nested(depth: int, leaf: Any, container: str) -> dict[str, Any]:
    """``data`` with a value ``depth`` keys (or indices) below it: depth 1 is ``{"n": leaf}``."""
    value: Any = leaf
    for _ in range(depth - 1):
        value = {"n": value} if container == "object" else [value]
    return {"n": value}


@pytest.mark.parametrize("container", ["object", "array"])
@pytest.mark.parametrize("leaf", [1, {}, []], ids=["number", "empty-object", "empty-array"])
def test_data_nested_32_deep_is_accepted_and_33_deep_refused(
    producer: Producer, r: redis.Redis, container: str, leaf: Any
) -> None:
    at_limit = nested(32, leaf, container)
    producer.send_event("order_placed", phone=PHONE, data=at_limit)
    [event] = queued_events(r)
    assert event["data"] == at_limit
    r.flushdb()
    with pytest.raises(ValidationError) as err:
        producer.send_event("order_placed", phone=PHONE, data=nested(33, leaf, container))
    assert err.value.field.startswith("data") and "32" in err.value.reason
    assert queued_messages(r) == 0


# --- the enqueue timeout, from the environment ------------------------------------------------


def test_a_redis_that_accepts_and_never_answers_fails_within_twice_the_configured_timeout(
    process_wide: None, silent_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given LIMECHAT_ENQUEUE_TIMEOUT_SECONDS well above its 0.5 s default, and a "Redis" that
    # accepts the connection and then says nothing
    timeout = 2.0
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{silent_redis}/0")
    monkeypatch.setenv("LIMECHAT_ENQUEUE_TIMEOUT_SECONDS", str(timeout))
    producer_module.configure()
    # When a web request sends an event
    started = time.monotonic()
    with pytest.raises(EnqueueError):
        producer_module.send_event("order_placed", phone=PHONE)
    elapsed = time.monotonic() - started
    # Then it gives up within about twice the configured timeout (a little slack for a busy
    # machine), and it is the configured timeout that governs, not the default
    assert elapsed < 2 * timeout + 0.75, elapsed
    assert elapsed > timeout / 2, f"gave up after {elapsed:.2f}s: the setting was not used"


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server.getsockname()[1]
    server.close()
