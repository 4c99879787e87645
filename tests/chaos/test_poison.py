"""Poison on the queue: whatever is written onto the list, the worker survives it.

A Redis list takes anything: another service, another language, a bug. Each test writes raw
items (queue items, events inside batch messages, entries of the retry schedule) and checks
the invariants: every sound event delivered once, every unsound one dead-lettered as
``malformed`` with what arrived, the worker alive and its scheduler beating. The last test is a
property-based hostile writer (hypothesis) against one real worker.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import contract, wire
from producer.envelope import new_event
from tests.helpers import WorkerProcess, wait_for, worker_env
from worker.deadletter import DeadLetters
from worker.stats import redis_now

from .figures import record
from .receiver import Answer, ChaosReceiver, Received
from .support import PHONE

pytestmark = pytest.mark.integration


# --- raw items -----------------------------------------------------------------------------


def sound_event(marker: str, **data: Any) -> str:
    """A valid envelope as JSON text, told apart at the receiver by ``data["seq"]``."""
    return json.dumps(new_event("order_placed", PHONE, PHONE, {"seq": marker, **data}, None))


def unsound(event_id: str, **changes: Any) -> dict[str, Any]:
    """A valid envelope with ``changes`` (a value of None removes the field)."""
    event: dict[str, Any] = dict(new_event("order_placed", PHONE, PHONE, {}, None))
    event["id"] = event_id
    for name, value in changes.items():
        if value is None:
            event.pop(name, None)
        else:
            event[name] = value
    return event


def as_text(value: Any) -> str:
    """JSON text as a careless writer makes it: NaN allowed, lone surrogates escaped."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


def batch(event_texts: list[str]) -> bytes:
    """A real deliver message (as the producer writes it) whose body holds these events."""
    message = json.loads(wire.encode_message([]))
    body = "[[[" + ",".join(event_texts) + "]],{},{}]"
    message["body"] = base64.b64encode(body.encode("ascii")).decode()
    return json.dumps(message).encode()


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def raw_event(event_id: str, data_text: str) -> str:
    """An event written by hand, its ``data`` as given (which json.dumps could not write)."""
    return '{"id": "' + event_id + '", "data": ' + data_text + "}"


@dataclass
class Poison:
    """What a test writes, and what it expects: markers delivered, ids dead-lettered."""

    queue_items: list[bytes] = field(default_factory=list)
    parked: dict[str | bytes, bytes] = field(default_factory=dict)  # schedule: id -> payload
    sound: set[str] = field(default_factory=set)  # markers (data.seq) of sound events
    dead_ids: set[str] = field(default_factory=set)  # ids their dead letters must carry
    dead_others: int = 0  # dead letters whose id cannot be known (junk without one)

    @property
    def dead(self) -> int:
        return len(self.dead_ids) + self.dead_others


def flaky_first(received: Received) -> Answer:
    """503 on the first attempt of events marked ``flaky``: they go through the schedule."""
    data = received.body.get("data") if isinstance(received.body, dict) else None
    if isinstance(data, dict) and data.get("flaky") and data.get("seq") not in flaky_seen:
        flaky_seen.add(data.get("seq"))
        return Answer(503, {"error": "try again"})
    return Answer()


flaky_seen: set[Any] = set()


class Site:
    """One worker, one receiver, one Redis database: write poison, wait for the outcome."""

    def __init__(self, redis_url: str, r: redis.Redis) -> None:
        self.r = r
        self.totals: Counter[str] = Counter()
        self.receiver = ChaosReceiver(flaky_first)
        env = worker_env(redis_url, self.receiver.url, LIMECHAT_MAX_ATTEMPTS="3")
        self.worker = WorkerProcess(env).start()

    def write(self, poison: Poison) -> None:
        now = redis_now(self.r)
        for event_id, payload in poison.parked.items():
            self.r.hset(contract.RETRY_EVENTS, event_id, payload)
            self.r.zadd(contract.RETRY_DUE, {event_id: now})
        for item in poison.queue_items:
            self.r.lpush(contract.QUEUE, item)

    def settle(self, poison: Poison, dead_before: int, timeout: float = 30) -> None:
        """Until every sound event arrived and every unsound one is in the DLQ; then check."""

        def settled() -> bool:
            self.alive()
            delivered = self.receiver.delivered_seqs()
            return (
                poison.sound <= delivered
                and DeadLetters(self.r).count() >= dead_before + poison.dead
                and not self.r.llen(contract.QUEUE)
                and not self.r.hlen(contract.UNACKED)
                and not self.r.zcard(contract.RETRY_DUE)
            )

        wait_for(settled, timeout, "every sound event delivered, every unsound dead-lettered")
        counts = self.receiver.deliveries()
        assert all(counts[m] == 1 for m in poison.sound), {m: counts[m] for m in poison.sound}
        dead = DeadLetters(self.r)
        assert dead.count() == dead_before + poison.dead
        for event_id in poison.dead_ids:
            entry = dead.get(event_id)
            assert entry is not None, f"no dead letter for {event_id}"
            assert entry["reason"] == "malformed", entry
            assert entry["error"], entry

    def alive(self) -> None:
        proc = self.worker.proc
        assert proc is not None and proc.poll() is None, "the worker died:\n" + self.worker.text()

    def scheduler_beats(self) -> None:
        """The worker's heartbeat (its scheduler thread's chore) is fresh."""
        beats = self.r.zrange(contract.WORKERS, 0, -1, withscores=True)
        assert beats, "no heartbeat at all"
        newest = max(score for _, score in beats)
        assert redis_now(self.r) - newest < 15, "the scheduler stopped beating"

    def close(self) -> None:
        # (SIGKILL, not a warm stop: the tests have checked all they check by now, and a warm
        # stop, which nothing here asserts on, costs ~1.2 s per test)
        self.worker.kill()
        self.receiver.stop()


@pytest.fixture
def site(redis_url: str, r: redis.Redis, request: pytest.FixtureRequest) -> Iterator[Site]:
    flaky_seen.clear()
    s = Site(redis_url, r)
    yield s
    s.close()
    record(f"poison: {request.node.name}", worker_alive_throughout=True, **s.totals)


def run(site: Site, poison: Poison) -> None:
    before = DeadLetters(site.r).count()
    site.write(poison)
    site.settle(poison, before)
    site.alive()
    assert "Unrecoverable error" not in site.worker.text()
    site.totals["runs"] += 1
    site.totals["queue items"] += len(poison.queue_items)
    site.totals["parked entries"] += len(poison.parked)
    site.totals["sound events delivered once"] += len(poison.sound)
    site.totals["unsound dead-lettered"] += poison.dead


# --- the cases of the issue, one by one ------------------------------------------------------


def test_a_deeply_nested_item_is_dead_lettered_and_the_worker_goes_on(site: Site) -> None:
    marker = str(uuid.uuid4())
    poison = Poison(queue_items=[deep(100_000).encode(), batch([sound_event(marker)])])
    poison.sound.add(marker)
    poison.dead_others = 1
    run(site, poison)
    [entry] = DeadLetters(site.r).list()
    assert "nested too deeply" in entry["error"]


def test_a_lone_surrogate_in_a_batch_costs_nothing_to_its_neighbours(site: Site) -> None:
    first, last = str(uuid.uuid4()), str(uuid.uuid4())
    bad_id = str(uuid.uuid4())
    bad = as_text(unsound(bad_id, data={"note": "\ud800"}))
    poison = Poison(queue_items=[batch([sound_event(first), bad, sound_event(last)])])
    poison.sound |= {first, last}
    poison.dead_ids.add(bad_id)
    run(site, poison)
    assert "lone surrogate" in (DeadLetters(site.r).get(bad_id) or {})["error"]


def test_nan_in_a_parked_entry_is_dead_lettered_and_retries_go_on(site: Site) -> None:
    nan_id, junk_id, marker = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    poison = Poison(
        parked={
            nan_id: as_text(unsound(nan_id, created_at=math.nan)).encode(),
            junk_id: b"\xff\xfe not json at all",
        },
        # a sound event that has to go through the schedule after them
        queue_items=[batch([sound_event(marker, flaky=True)])],
    )
    poison.sound.add(marker)
    poison.dead_ids |= {nan_id, junk_id}
    run(site, poison)
    site.scheduler_beats()
    assert "created_at" in (DeadLetters(site.r).get(nan_id) or {})["error"]


def test_a_parked_entry_whose_id_is_not_utf8_holds_back_no_other_retry(site: Site) -> None:
    # (the id was decoded with replacement characters, so the claim never matched again: every
    # retry claimed with it went back to the schedule, forever)
    markers = [str(uuid.uuid4()) for _ in range(11)]
    parked: dict[str | bytes, bytes] = {
        (b"bad-\xff" if i == 0 else marker): sound_event(marker).encode()
        for i, marker in enumerate(markers)
    }
    poison = Poison(parked=parked)
    poison.sound |= set(markers)
    run(site, poison)


def test_an_event_too_deep_or_with_a_huge_integer_costs_nothing_to_its_batch(site: Site) -> None:
    markers = [str(uuid.uuid4()) for _ in range(3)]
    deep_id, huge_id = str(uuid.uuid4()), str(uuid.uuid4())
    deep_text = raw_event(deep_id, deep(50_000))
    huge_text = raw_event(huge_id, '{"n": ' + "7" * 5000 + "}")
    texts = [sound_event(markers[0]), deep_text, sound_event(markers[1]), huge_text]
    poison = Poison(queue_items=[batch([*texts, sound_event(markers[2])])])
    poison.sound |= set(markers)
    poison.dead_ids |= {deep_id, huge_id}
    run(site, poison)


def test_kombu_type_markers_in_data_reach_limechat_unchanged(site: Site) -> None:
    # kombu's decoder would read these as a datetime and as bytes, or drop the message
    odd = {
        "when": {"__type__": "datetime", "__value__": "not a date"},
        "raw": {"__type__": "bytes", "__value__": "abc"},
        "mystery": {"__type__": "nothing-kombu-knows", "__value__": 1},
    }
    marker = str(uuid.uuid4())
    poison = Poison(queue_items=[batch([sound_event(marker, **odd)])])
    poison.sound.add(marker)
    run(site, poison)
    [request] = [r for r in site.receiver.snapshot() if r.seq == marker]
    assert {k: request.body["data"][k] for k in odd} == odd


def test_kombu_type_markers_in_the_envelope_cost_nothing(site: Site) -> None:
    # (kombu's decoder raised on it, and the worker died; the worker now rewrites the message)
    marker = str(uuid.uuid4())
    message = json.loads(batch([sound_event(marker)]))
    message["headers"]["shadow"] = {"__type__": "no-such-type", "__value__": 1}
    poison = Poison(queue_items=[json.dumps(message).encode()])
    poison.sound.add(marker)
    run(site, poison)
    assert site.worker.saw("rewrote a message another writer made")


def test_a_junk_record_in_the_unacked_hash_goes_to_the_dlq(site: Site) -> None:
    # (kombu's restore raised on it in the consumer's loop, and the worker died)
    site.r.hset(contract.UNACKED, "junk-tag", b"not a record at all")
    site.r.zadd(contract.UNACKED_INDEX, {"junk-tag": time.time() - 600})
    wait_for(lambda: DeadLetters(site.r).count() == 1, 30, "the dead letter")
    [entry] = DeadLetters(site.r).list()
    assert entry["reason"] == "malformed", entry
    site.alive()
    assert not site.r.hlen(contract.UNACKED)


# --- the hostile writer ----------------------------------------------------------------------


def _bad_event(kind: str, event_id: str) -> tuple[str, str | None]:
    """An unsound event as JSON text, and the id its dead letter will carry (if knowable)."""
    texts: dict[str, Any] = {
        "surrogate in data": unsound(event_id, data={"x": "a\udfffb"}),
        "surrogate in name": unsound(event_id, event="order_\ud83d"),
        "NaN in data": unsound(event_id, data={"amount": math.nan}),
        "Infinity in data": unsound(event_id, data={"amount": -math.inf}),
        "NaN created_at": unsound(event_id, created_at=math.nan),
        "wrong type: data": unsound(event_id, data=[1, 2]),
        "wrong type: phone": unsound(event_id, phone=915673412780),
        "wrong type: attempts": unsound(event_id, attempts="3"),
        "negative attempts": unsound(event_id, attempts=-1),
        "bool attempts": unsound(event_id, attempts=True),
        "wrong type: history": unsound(event_id, history={"at": 1}),
        "wrong type: account": unsound(event_id, account=7),
        "missing event": unsound(event_id, event=None),
        "too big": unsound(event_id, data={"blob": "x" * 100_000}),
    }
    if kind in texts:
        return as_text(texts[kind]), event_id
    raw: dict[str, str] = {
        "huge integer": raw_event(event_id, '{"n": ' + "9" * 4500 + "}"),
        "too deep": raw_event(event_id, deep(3000)),
    }
    if kind in raw:
        return raw[kind], event_id
    others = {"a string": '"just a string"', "a number": "42", "null": "null", "a list": "[1]"}
    return others[kind], None


BAD_KINDS = [
    "surrogate in data",
    "surrogate in name",
    "NaN in data",
    "Infinity in data",
    "NaN created_at",
    "wrong type: data",
    "wrong type: phone",
    "wrong type: attempts",
    "negative attempts",
    "bool attempts",
    "wrong type: history",
    "wrong type: account",
    "missing event",
    "too big",
    "huge integer",
    "too deep",
    "a string",
    "a number",
    "null",
    "a list",
]
JUNK = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3).map(
        lambda d: json.dumps(d).encode()
    ),
    st.integers(min_value=1, max_value=200_000).map(lambda n: deep(n).encode()),
)
SOUND = st.fixed_dictionaries(
    {
        "flaky": st.booleans(),
        "extra": st.dictionaries(
            st.text(max_size=6),
            st.one_of(st.text(max_size=12), st.integers(-(2**70), 2**70), st.none()),
            max_size=3,
        ),
    }
)
# (sound events three times as likely as unsound ones in a batch; batches twice as junk)
BATCH_ITEM = st.one_of(SOUND, SOUND, SOUND, st.sampled_from(BAD_KINDS))
BATCH = st.lists(BATCH_ITEM, min_size=1, max_size=8).map(lambda items: ("batch", items))
QUEUE_ITEM = st.one_of(
    BATCH,
    BATCH,
    JUNK.map(lambda junk: ("junk", junk)),
    st.binary(max_size=32).map(lambda payload: ("parked", payload)),
)


def poison_from(drawn: list[tuple[str, Any]]) -> Poison:
    poison = Poison()
    for kind, value in drawn:
        if kind == "junk":
            poison.queue_items.append(value)
            poison.dead_others += 1
        elif kind == "parked":
            event_id = str(uuid.uuid4())
            poison.parked[event_id] = value
            poison.dead_ids.add(event_id)
        else:
            texts = []
            for item in value:
                if isinstance(item, dict):
                    marker = str(uuid.uuid4())
                    texts.append(sound_event(marker, flaky=item["flaky"], extra=item["extra"]))
                    poison.sound.add(marker)
                else:
                    text, dead_id = _bad_event(item, str(uuid.uuid4()))
                    texts.append(text)
                    if dead_id is None:
                        poison.dead_others += 1
                    else:
                        poison.dead_ids.add(dead_id)
            poison.queue_items.append(batch(texts))
    return poison


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=st.lists(QUEUE_ITEM, min_size=1, max_size=5))
def test_a_hostile_writer_never_kills_the_worker_nor_costs_a_sound_event(
    site: Site, drawn: list[tuple[str, Any]]
) -> None:
    poison = poison_from(drawn)
    run(site, poison)
    site.scheduler_beats()
    # (a quiet moment: the worker is still there after the last example)
    time.sleep(0.05)
    site.alive()
