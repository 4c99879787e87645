"""The dead-letter queue: events that could not be delivered, with everything known about why.

Entries live in a hash (event id -> entry) indexed by a sorted set (event id -> time), so one
entry per event: an event dead-lettered twice (a redelivery after a crash) is stored once. A
count per reason is kept beside them, so depth by reason costs one read. Entries leave only by
replay, purge, import, or a retention limit the operator set, and then they are counted.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import redis

from producer import contract, wire
from producer.envelope import Event

from .outcome import Reason
from .selection import Selection

log = logging.getLogger("limechat_events.deadletter")

#: How many entries one replay/purge step reads and moves (one atomic Lua call each).
CHUNK = 1000
EVERYTHING = Selection()

_KEYS = [
    contract.DLQ_INDEX,
    contract.DLQ_ENTRIES,
    contract.DLQ_REASONS,
    contract.DLQ_REASON_COUNTS,
]

# KEYS[1]: index   KEYS[2]: entries   KEYS[3]: id -> reason   KEYS[4]: reason -> count
# ARGV[1]: event id   ARGV[2]: time   ARGV[3]: reason   ARGV[4]: entry (JSON)
# Returns 1 for a new dead letter, 0 when the event was already in the DLQ (replaced).
_ADD = """
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old then redis.call('HINCRBY', KEYS[4], old, -1) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
if old then return 0 end
return 1
"""

# KEYS[1..4]: as _ADD   KEYS[5]: the queue
# ARGV[1]: n   ARGV[2]: '1' if every id must still be in the DLQ (else nothing happens: -1)
# ARGV[3..n+2]: event ids   ARGV[n+3..]: task messages to push in the same step
# Removes the ids (and their reason counts) and pushes the messages atomically: an entry never
# leaves the DLQ without its event being on the queue, and never both stays and is queued.
_REMOVE = """
local n = tonumber(ARGV[1])
if ARGV[2] == '1' then
  for i = 3, n + 2 do
    if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then return -1 end
  end
end
local removed = 0
for i = 3, n + 2 do
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  local reason = redis.call('HGET', KEYS[3], ARGV[i])
  if reason then
    redis.call('HINCRBY', KEYS[4], reason, -1)
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
for i = n + 3, #ARGV do redis.call('LPUSH', KEYS[5], ARGV[i]) end
return removed
"""


def make_entry(
    event: Event,
    reason: Reason,
    *,
    status: int | None,
    response_body: str,
    error: str,
    now: float,
) -> dict[str, Any]:
    """The stored form of a dead letter. The token is never part of an event, so never here."""
    history = event.get("history") or []
    return {
        "event_id": event["id"],
        "event": event,
        "account": event.get("account"),
        "attempts": event.get("attempts", 0),
        "first_attempt_at": history[0]["at"] if history else None,
        "last_attempt_at": history[-1]["at"] if history else None,
        "dead_lettered_at": now,
        "reason": reason.value,
        "status": status,
        "response_body": response_body,
        "error": error,
    }


def fresh_attempts(event: Event) -> Event:
    """The event as it goes back to the queue: same id and body, attempts reset."""
    fresh: Event = {**event, "attempts": 0, "history": []}
    fresh.pop("slot_at", None)
    return fresh


class DeadLetters:
    """Add, select, replay, purge and trim dead letters."""

    def __init__(self, client: redis.Redis, *, batch_size: int = contract.DEFAULT_BATCH_SIZE):
        self._redis = client
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self.batch_size = batch_size

    # --- writing ---

    def add(
        self,
        event: Event,
        reason: Reason,
        *,
        status: int | None = None,
        response_body: str = "",
        error: str = "",
    ) -> tuple[dict[str, Any], bool]:
        """Store a dead letter; returns it and whether it is new (not a redelivered one)."""
        now = time.time()
        entry = make_entry(
            event, reason, status=status, response_body=response_body, error=error, now=now
        )
        new = self._add(
            keys=_KEYS,
            args=[event["id"], repr(now), reason.value, json.dumps(entry, ensure_ascii=False)],
        )
        return entry, bool(new)

    # --- reading ---

    def count(self) -> int:
        return int(self._redis.zcard(contract.DLQ_INDEX))

    def get(self, event_id: str) -> dict[str, Any] | None:
        raw = self._redis.hget(contract.DLQ_ENTRIES, event_id)
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    def select(
        self, selection: Selection = EVERYTHING, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Matching entries, oldest first, read in chunks (never the whole DLQ at once)."""
        low = "-inf" if selection.since is None else repr(selection.since)
        high = "+inf" if selection.until is None else repr(selection.until)
        offset = yielded = 0
        while limit is None or yielded < limit:
            ids = cast(
                "builtins.list[bytes]",
                self._redis.zrangebyscore(contract.DLQ_INDEX, low, high, start=offset, num=CHUNK),
            )
            if not ids:
                return
            offset += len(ids)
            for entry in self._load(ids):
                if selection.matches(entry):
                    yield entry
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return

    def list(
        self, selection: Selection = EVERYTHING, limit: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        return builtins.list(self.select(selection, limit))

    # --- moving out ---

    def replay(
        self,
        selection: Selection = EVERYTHING,
        *,
        ids: Sequence[str] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Put matching entries (or the given ids) back on the queue with fresh attempts.

        Each chunk leaves the DLQ in the same atomic step that queues it. Entries that arrive
        during the replay are left for the next one (the selection ends at its start time).
        """
        return self._drain(selection, ids, on_progress, requeue=True)

    def purge(
        self,
        selection: Selection = EVERYTHING,
        *,
        ids: Sequence[str] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete matching entries (or the given ids) for good."""
        return self._drain(selection, ids, on_progress, requeue=False)

    def enqueue_and_remove(self, events: Sequence[Event]) -> int:
        """Queue (edited) events with fresh attempts, removing their ids from the DLQ in the
        same atomic step; returns how many of them were in the DLQ."""
        removed = 0
        for start in range(0, len(events), CHUNK):
            chunk = [fresh_attempts(e) for e in events[start : start + CHUNK]]
            messages = wire.encode_batches(chunk, self.batch_size)
            removed += self._run_remove([e["id"] for e in chunk], messages, require_held=False)
        return removed

    def trim(self, max_entries: int | None, max_age: float | None, now: float) -> int:
        """Apply the retention limits; returns how many entries were removed (and counts them)."""
        trimmed = 0
        if max_age is not None:
            while ids := self._ids_between("-inf", repr(now - max_age), 0):
                trimmed += self._run_remove([i.decode() for i in ids], [], require_held=False)
        if max_entries is not None:
            excess = self.count() - max_entries
            while excess > 0:
                ids = cast(
                    "builtins.list[bytes]",
                    self._redis.zrange(contract.DLQ_INDEX, 0, min(excess, CHUNK) - 1),
                )
                removed = self._run_remove([i.decode() for i in ids], [], require_held=False)
                trimmed += removed
                excess -= max(removed, 1)
        if trimmed:
            self._redis.hincrby(contract.STATS_COUNTERS, "dlq_trimmed", trimmed)
            log.warning(
                "retention: trimmed %d dead letters (LIMECHAT_DLQ_MAX_ENTRIES=%s, "
                "LIMECHAT_DLQ_MAX_AGE_SECONDS=%s)",
                trimmed,
                max_entries,
                max_age,
            )
        return trimmed

    def _drain(
        self,
        selection: Selection,
        ids: Sequence[str] | None,
        on_progress: Callable[[int], None] | None,
        *,
        requeue: bool,
    ) -> int:
        if selection.until is None:
            selection = Selection(**{**selection.__dict__, "until": time.time()})
        done = 0
        for entries in self._chunks_to_drain(selection, ids):
            chunk_ids = [e["event_id"] for e in entries]
            messages: builtins.list[str] = []
            if requeue:
                events = [fresh_attempts(e["event"]) for e in entries]
                messages = wire.encode_batches(events, self.batch_size)
            removed = self._run_remove(chunk_ids, messages, require_held=requeue)
            done += max(removed, 0)
            if on_progress is not None:
                on_progress(done)
        return done

    def _chunks_to_drain(
        self, selection: Selection, ids: Sequence[str] | None
    ) -> Iterator[builtins.list[dict[str, Any]]]:
        if ids is not None:
            for start in range(0, len(ids), CHUNK):
                chunk = [i.encode() for i in ids[start : start + CHUNK]]
                found = [e for e in self._load(chunk) if selection.matches(e)]
                if found:
                    yield found
            return
        # Entries leave as we go, so read from the start each time, skipping what does not
        # match (kept in `skipped`, since it stays put).
        skipped = 0
        low = "-inf" if selection.since is None else repr(selection.since)
        high = repr(selection.until)
        while True:
            ids_now = self._ids_between(low, high, skipped)
            if not ids_now:
                return
            entries = builtins.list(self._load(ids_now))
            matching = [e for e in entries if selection.matches(e)]
            skipped += len(ids_now) - len(matching)
            if matching:
                yield matching

    def _run_remove(
        self, ids: Sequence[str], messages: Sequence[str], *, require_held: bool
    ) -> int:
        if not ids:
            return 0
        return int(
            self._remove(
                keys=[*_KEYS, contract.QUEUE],
                args=[len(ids), "1" if require_held else "0", *ids, *messages],
            )
        )

    def _ids_between(self, low: str, high: str, offset: int) -> builtins.list[bytes]:
        """Up to :data:`CHUNK` ids dead-lettered between ``low`` and ``high``, oldest first."""
        return cast(
            "builtins.list[bytes]",
            self._redis.zrangebyscore(contract.DLQ_INDEX, low, high, start=offset, num=CHUNK),
        )

    def _load(self, ids: Sequence[bytes]) -> Iterator[dict[str, Any]]:
        if not ids:
            return
        for raw in self._redis.hmget(contract.DLQ_ENTRIES, builtins.list(ids)):
            if raw is not None:
                yield json.loads(raw)
