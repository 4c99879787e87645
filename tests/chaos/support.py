"""What the chaos tests share: numbered events, counting outcomes, workers with a fault hook."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import redis

from producer import Producer, contract
from tests.helpers import wait_for
from worker.deadletter import DeadLetters

from .receiver import ChaosReceiver

PHONE = "+915673412780"


def items(seqs: Iterable[int], event: str = "order_placed") -> list[dict[str, Any]]:
    """LimeChat request bodies numbered by ``data["seq"]``."""
    return [{"event": event, "phone": PHONE, "data": {"seq": i}} for i in seqs]


def send_numbered(producer: Producer, seqs: Iterable[int], batch: int = 50) -> list[str]:
    """Enqueue numbered events in chunks (``send_events``, all or nothing per chunk)."""
    ids: list[str] = []
    chunk: list[int] = []
    for seq in seqs:
        chunk.append(seq)
        if len(chunk) == batch:
            ids += producer.send_events(items(chunk))
            chunk = []
    if chunk:
        ids += producer.send_events(items(chunk))
    return ids


def dead_letters(r: redis.Redis) -> list[dict[str, Any]]:
    return DeadLetters(r).list()


def dead_seqs(r: redis.Redis) -> set[Any]:
    return {(e["event"].get("data") or {}).get("seq") for e in dead_letters(r)}


def _events_in(payload: dict[str, Any]) -> int:
    body = json.loads(base64.b64decode(payload["body"]))
    return len(body[0][0])


def queued_events(r: redis.Redis) -> int:
    """Events in the messages waiting on the queue."""
    return sum(_events_in(json.loads(raw)) for raw in r.lrange(contract.QUEUE, 0, -1))


def _seqs_in(payload: dict[str, Any]) -> set[Any]:
    body = json.loads(base64.b64decode(payload["body"]))
    return {(e.get("data") or {}).get("seq") for e in body[0][0] if isinstance(e, dict)}


# KEYS[1]: the queue   KEYS[2]: the taking lists' registry   KEYS[3]: unacked   KEYS[4]: parked
# Returns {lists, unacked, parked}: the queue's and every taking list's messages, kombu's
# unacknowledged records and the parked retries, all read in one atomic step.
_HELD = """
local lists = {redis.call('LRANGE', KEYS[1], 0, -1)}
for _, key in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  table.insert(lists, redis.call('LRANGE', key, 0, -1))
end
return {lists, redis.call('HVALS', KEYS[3]), redis.call('HVALS', KEYS[4])}
"""


def held_seqs(r: redis.Redis) -> set[Any]:
    """Events held anywhere in Redis: queued, being taken, unacknowledged, parked, dead.

    The moving parts are read in one atomic step: a message that moves meanwhile (kombu putting
    an unacknowledged one back on the queue) is not missed. (The dead letters are read after:
    an event reaches the DLQ before its message is acknowledged, and never leaves it here.)
    """
    keys = [contract.QUEUE, contract.TAKING, contract.UNACKED, contract.RETRY_EVENTS]
    lists, unacked, parked = r.eval(_HELD, len(keys), *keys)
    held: set[Any] = set()
    for raw in (raw for items in lists for raw in items):
        held |= _seqs_in(json.loads(raw))
    for raw in unacked:
        held |= _seqs_in(json.loads(raw)[0])
    for raw in parked:
        held.add((json.loads(raw).get("data") or {}).get("seq"))
    return held | dead_seqs(r)


def where_held(r: redis.Redis, seqs: Iterable[Any]) -> list[str]:
    """Where each of ``seqs`` sits in Redis, one line per place: for a failing test's message.

    A taking list shows its age (seconds since its worker last swept it): a young one belongs
    to a live worker, an old one to a worker that is gone.
    """
    wanted = set(seqs)
    now = float(r.time()[0])
    found: list[str] = []

    def note(place: str, carried: set[Any]) -> None:
        if carried & wanted:
            found.append(f"{place}: {sorted(carried & wanted)}")

    for i, raw in enumerate(r.lrange(contract.QUEUE, 0, -1)):
        note(f"queue[{i}]", _seqs_in(json.loads(raw)))
    lists = cast("list[tuple[bytes, float]]", r.zrange(contract.TAKING, 0, -1, withscores=True))
    for key, swept in lists:
        for raw in r.lrange(key, 0, -1):
            note(f"{key.decode()} (swept {now - swept:.0f} s ago)", _seqs_in(json.loads(raw)))
    index = dict(
        cast("list[tuple[bytes, float]]", r.zrange(contract.UNACKED_INDEX, 0, -1, withscores=True))
    )
    for tag, raw in cast("dict[bytes, bytes]", r.hgetall(contract.UNACKED)).items():
        taken = index.get(tag)
        age = "not indexed" if taken is None else f"taken {now - taken:.0f} s ago"
        note(f"unacked {tag.decode()} ({age})", _seqs_in(json.loads(raw)[0]))
    for raw in r.hvals(contract.RETRY_EVENTS):
        note("parked", {(json.loads(raw).get("data") or {}).get("seq")})
    return found


def unacked_events(r: redis.Redis, tags: Iterable[bytes] | None = None) -> int:
    """Events in messages taken and not acknowledged (kombu's unacked hash), or in ``tags``."""
    if tags is None:
        raws = list(r.hvals(contract.UNACKED))
    else:
        wanted = list(tags)
        raws = [v for v in r.hmget(contract.UNACKED, wanted) if v is not None] if wanted else []
    return sum(_events_in(json.loads(raw)[0]) for raw in raws)


def taking_events(r: redis.Redis) -> int:
    """Events in messages being taken: moved into a worker's taking list, not yet recorded."""
    lists = r.zrange(contract.TAKING, 0, -1)
    return sum(_events_in(json.loads(raw)) for key in lists for raw in r.lrange(key, 0, -1))


def nothing_held(r: redis.Redis) -> bool:
    """No message queued, being taken or unacknowledged: every worker is done with its work."""
    return not (r.llen(contract.QUEUE) or r.hlen(contract.UNACKED) or taking_events(r))


@dataclass(frozen=True)
class Tally:
    """Where every event of a run ended up."""

    sent: int
    delivered: int
    duplicates: int
    dead_lettered: int
    missing: frozenset[Any]

    @classmethod
    def of(cls, seqs: Iterable[Any], receiver: ChaosReceiver, r: redis.Redis) -> Tally:
        wanted = set(seqs)
        counts = receiver.deliveries()
        delivered = wanted & set(counts)
        dead = wanted & dead_seqs(r)
        return cls(
            sent=len(wanted),
            delivered=len(delivered),
            duplicates=sum(n - 1 for seq, n in counts.items() if seq in wanted),
            dead_lettered=len(dead),
            missing=frozenset(wanted - delivered - dead),
        )


def all_settled(seqs: Iterable[Any], receiver: ChaosReceiver, r: redis.Redis) -> bool:
    """Every event delivered or dead-lettered."""
    return not Tally.of(seqs, receiver, r).missing


def wait_settled(
    seqs: Iterable[Any], receiver: ChaosReceiver, r: redis.Redis, timeout: float, what: str
) -> Tally:
    wanted = list(seqs)
    try:
        wait_for(lambda: all_settled(wanted, receiver, r), timeout, what, interval=0.1)
    except AssertionError:
        tally = Tally.of(wanted, receiver, r)
        missing = sorted(tally.missing)[:20]
        raise AssertionError(
            f"{what}: {len(tally.missing)} events missing, e.g. {missing}; {tally}"
        ) from None
    return Tally.of(wanted, receiver, r)
