"""The dead-letter queue: events that could not be delivered, with everything known about why.

Entries live in a hash (event id -> entry) indexed by a sorted set (event id -> time), so one
entry per event: an event dead-lettered twice (a redelivery after a crash) is stored once. A
count per reason is kept beside them, so depth by reason costs one read. Entries leave only by
replay, purge, import, or a retention limit the operator set, and then they are counted.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import redis

from producer import contract, wire
from producer.envelope import Event

from .outcome import Reason
from .selection import Selection

log = logging.getLogger("limechat_events.deadletter")

#: How many entries one page, replay/purge step or trim call reads or moves (one Lua call each).
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

# Forgets one dead letter: its index entry, its entry, its reason and that reason's count.
# Shared by _REMOVE and _TRIM, which run with KEYS[1..4] as _ADD. Returns 1 if it was there.
_DROP = """
local function drop(id)
  local gone = redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  local reason = redis.call('HGET', KEYS[3], id)
  if reason then
    redis.call('HINCRBY', KEYS[4], reason, -1)
    redis.call('HDEL', KEYS[3], id)
  end
  return gone
end
"""

# KEYS[1..4]: as _ADD   KEYS[5]: the queue
# ARGV[1]: n   ARGV[2]: '1' if every id must still be in the DLQ (else nothing happens: -1)
# ARGV[3..n+2]: event ids   ARGV[n+3..]: task messages to push in the same step
# Removes the ids (and their reason counts) and pushes the messages atomically: an entry never
# leaves the DLQ without its event being on the queue, and never both stays and is queued.
_REMOVE = (
    _DROP
    + """
local n = tonumber(ARGV[1])
if ARGV[2] == '1' then
  for i = 3, n + 2 do
    if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then return -1 end
  end
end
local removed = 0
for i = 3, n + 2 do removed = removed + drop(ARGV[i]) end
for i = n + 3, #ARGV do redis.call('LPUSH', KEYS[5], ARGV[i]) end
return removed
"""
)

# KEYS[1..4]: as _ADD   KEYS[5]: the stats counters
# ARGV[1]: 'age' or 'count'   ARGV[2]: for 'age', the time at or before which entries go;
#   for 'count', how many entries to keep   ARGV[3]: the most this call removes
# Returns how many it removed (fewer than ARGV[3]: the limit is met). Counting and removing
# in one call is what keeps trimmers in several processes (every worker runs one) from each
# removing the same excess: one read the count, another removed, the first removed again.
_TRIM = (
    _DROP
    + """
local ids
if ARGV[1] == 'age' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
else
  local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
  if excess <= 0 then return 0 end
  ids = redis.call('ZRANGE', KEYS[1], 0, math.min(excess, tonumber(ARGV[3])) - 1)
end
local removed = 0
for _, id in ipairs(ids) do removed = removed + drop(id) end
if removed > 0 then redis.call('HINCRBY', KEYS[5], 'dlq_trimmed', removed) end
return removed
"""
)


#: An entry's place in the index: (dead-letter time, event id as stored), what cursors hold.
Position = tuple[float, bytes]


def _bounds(selection: Selection) -> tuple[str, str]:
    """The selection's time range as the index's score bounds."""
    low = "-inf" if selection.since is None else repr(selection.since)
    high = "+inf" if selection.until is None else repr(selection.until)
    return low, high


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
        self._trim = client.register_script(_TRIM)
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
        now: float | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a dead letter (dead-lettered ``now``, default: the current time); returns it
        and whether it is new (not a redelivered one)."""
        now = time.time() if now is None else now
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
        """Matching entries, oldest first, read a page at a time (never the whole DLQ at once).

        Pages follow a cursor, not an offset: entries that leave while the caller iterates (a
        trim, a replay, a purge) never make it skip one that stayed, nor read one twice (an
        event dead-lettered anew meanwhile is read again, as it now is, in its new place).
        """
        if limit is not None and limit < 1:
            return
        yielded = 0
        for _, entry in self.walk(selection):
            if selection.matches(entry):
                yield entry
                yielded += 1
                if yielded == limit:
                    return

    def walk(
        self,
        selection: Selection = EVERYTHING,
        after: Position | None = None,
        *,
        newest_first: bool = False,
    ) -> Iterator[tuple[Position, dict[str, Any]]]:
        """Every entry in the selection's time range (matching its other filters or not),
        oldest first (or newest first), with its place in the index; after ``after`` in that
        order if given (a cursor)."""
        positions = self._positions_newest if newest_first else self._positions
        for page in positions(selection, after):
            # (a generator per page: its entries are let go before the next page is read)
            yield from self._load_page(page)

    def count_cheaply(self, selection: Selection = EVERYTHING) -> int | None:
        """How many entries match, when the index or the reason counts say it in one read;
        None when only reading the entries could tell (an event or status filter)."""
        if any(v is not None for v in (selection.event, selection.status, selection.account)):
            return None
        if selection.reason is None:
            low, high = _bounds(selection)
            return int(self._redis.zcount(contract.DLQ_INDEX, low, high))
        if selection.since is None and selection.until is None:
            count = self._redis.hget(contract.DLQ_REASON_COUNTS, selection.reason)
            return max(int(count or 0), 0)
        return None

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
        The messages are marked redelivered, so the worker reads the delivered markers of
        their events and skips those LimeChat already accepted.
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
        same atomic step; returns how many of them were in the DLQ.

        One event per id (two would overwrite each other's fix); the messages are marked
        redelivered, as replays are, so delivered markers are read.
        """
        seen: set[str] = set()
        for e in events:
            if e["id"] in seen:
                raise ValueError(f"event id {e['id']} appears more than once")
            seen.add(e["id"])
        removed = 0
        for start in range(0, len(events), CHUNK):
            chunk = [fresh_attempts(e) for e in events[start : start + CHUNK]]
            messages = wire.encode_batches(chunk, self.batch_size, redelivered=True)
            removed += self._run_remove([e["id"] for e in chunk], messages, require_held=False)
        return removed

    def trim(self, max_entries: int | None, max_age: float | None, now: float) -> int:
        """Apply the retention limits; returns how many entries were removed (and counts them).

        Safe to run from several processes at once: each step counts and removes in one
        atomic call, so together they never remove more than the limits ask.
        """
        trimmed = 0
        if max_age is not None:
            trimmed += self._trim_to("age", repr(now - max_age))
        if max_entries is not None:
            trimmed += self._trim_to("count", str(max_entries))
        if trimmed:
            log.warning(
                "retention: trimmed %d dead letters (LIMECHAT_DLQ_MAX_ENTRIES=%s, "
                "LIMECHAT_DLQ_MAX_AGE_SECONDS=%s)",
                trimmed,
                max_entries,
                max_age,
            )
        return trimmed

    def _trim_to(self, limit: str, value: str) -> int:
        """Trim by ``limit`` ('age' or 'count') in calls of at most :data:`CHUNK` removals."""
        trimmed = 0
        while True:
            removed = int(
                self._trim(keys=[*_KEYS, contract.STATS_COUNTERS], args=[limit, value, str(CHUNK)])
            )
            trimmed += removed
            if removed < CHUNK:
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
            selection = dataclasses.replace(selection, until=time.time())
        done = 0
        for entries in self._chunks_to_drain(selection, ids):
            while entries:
                chunk_ids = [e["event_id"] for e in entries]
                messages: builtins.list[str] = []
                if requeue:
                    events = [fresh_attempts(e["event"]) for e in entries]
                    messages = wire.encode_batches(events, self.batch_size, redelivered=True)
                removed = self._run_remove(chunk_ids, messages, require_held=requeue)
                if removed >= 0:
                    done += removed
                    break
                # One left meanwhile (another replay, a purge, a trim): again with the rest.
                entries = [
                    e for e in self._load([i.encode() for i in chunk_ids]) if selection.matches(e)
                ]
            if on_progress is not None:
                on_progress(done)
        return done

    def _chunks_to_drain(
        self, selection: Selection, ids: Sequence[str] | None
    ) -> Iterator[builtins.list[dict[str, Any]]]:
        if ids is None:
            pages: Iterable[Sequence[bytes]] = self._pages(selection)
        else:
            unique = builtins.list(dict.fromkeys(ids))  # an id given twice is replayed once
            pages = (
                [i.encode() for i in unique[start : start + CHUNK]]
                for start in range(0, len(unique), CHUNK)
            )
        for page in pages:
            found = [e for e in self._load(page) if selection.matches(e)]
            if found:
                yield found

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

    def _pages(self, selection: Selection) -> Iterator[builtins.list[bytes]]:
        for page in self._positions(selection):
            yield [member for member, _ in page]

    def _positions(
        self, selection: Selection, after: Position | None = None
    ) -> Iterator[builtins.list[tuple[bytes, float]]]:
        """(id, time) in the selection's time range, oldest first, up to :data:`CHUNK` at a
        time; after the (time, id) ``after`` if given.

        Each page starts after the last (time, id) of the one before: the index orders equal
        times by id, so the cursor is exact even when entries share a time, and it stays put
        when entries before it leave.
        """
        low, high = _bounds(selection)
        if after is not None and (selection.since is None or after[0] >= selection.since):
            page = self._page_after(after[0], after[1], high)
        else:
            page = self._scores(low, high, CHUNK)
        while page:
            yield page
            last_id, last_time = page[-1]
            page = self._page_after(last_time, last_id, high)

    def _positions_newest(
        self, selection: Selection, after: Position | None = None
    ) -> Iterator[builtins.list[tuple[bytes, float]]]:
        """As :meth:`_positions`, newest first: Redis orders equal times by id descending
        when reversed, so the cursor (time, id) is exact here too."""
        low, high = _bounds(selection)
        if after is not None and (selection.until is None or after[0] <= selection.until):
            page = self._page_before(after[0], after[1], low)
        else:
            page = self._scores_newest(high, low, CHUNK)
        while page:
            yield page
            last_id, last_time = page[-1]
            page = self._page_before(last_time, last_id, low)

    def _page_before(
        self, last_time: float, last_id: bytes, low: str
    ) -> builtins.list[tuple[bytes, float]]:
        want = CHUNK
        while True:
            rows = self._scores_newest(repr(last_time), low, want)
            before = [(m, t) for m, t in rows if t < last_time or m < last_id]
            if before or len(rows) < want:
                return before
            want *= 2  # a whole page tied with the last id read: look further along

    def _scores_newest(self, high: str, low: str, count: int) -> builtins.list[tuple[bytes, float]]:
        return cast(
            "builtins.list[tuple[bytes, float]]",
            self._redis.zrevrangebyscore(
                contract.DLQ_INDEX, high, low, start=0, num=count, withscores=True
            ),
        )

    def _page_after(
        self, last_time: float, last_id: bytes, high: str
    ) -> builtins.list[tuple[bytes, float]]:
        want = CHUNK
        while True:
            rows = self._scores(repr(last_time), high, want)
            after = [(m, t) for m, t in rows if t > last_time or m > last_id]
            if after or len(rows) < want:
                return after
            want *= 2  # a whole page tied with the last id read: look further along

    def _scores(self, low: str, high: str, count: int) -> builtins.list[tuple[bytes, float]]:
        return cast(
            "builtins.list[tuple[bytes, float]]",
            self._redis.zrangebyscore(
                contract.DLQ_INDEX, low, high, start=0, num=count, withscores=True
            ),
        )

    def _load_page(
        self, page: Sequence[tuple[bytes, float]]
    ) -> Iterator[tuple[Position, dict[str, Any]]]:
        raws = self._redis.hmget(contract.DLQ_ENTRIES, [member for member, _ in page])
        for (member, when), raw in zip(page, raws, strict=True):
            if raw is not None:
                yield (when, member), json.loads(raw)

    def _load(self, ids: Sequence[bytes]) -> Iterator[dict[str, Any]]:
        if not ids:
            return
        for raw in self._redis.hmget(contract.DLQ_ENTRIES, builtins.list(ids)):
            if raw is not None:
                yield json.loads(raw)
