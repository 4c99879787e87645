"""The dead-letter queue: events that could not be delivered, with everything known about why.

Entries live in a hash (event id -> entry) indexed by a sorted set (event id -> time), so one
entry per event: an event dead-lettered twice (a redelivery after a crash) is stored once.
Nothing here trims or expires entries; they leave only by replay or by an operator's purge.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import redis

from producer import contract, wire
from producer.envelope import Event

from .outcome import Reason
from .requeue import Requeuer

#: How many entries one replay step reads, re-queues and removes (one atomic call each).
REPLAY_CHUNK = 500


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


class DeadLetters:
    """Add, list and replay dead letters."""

    def __init__(self, client: redis.Redis, *, batch_size: int = contract.DEFAULT_BATCH_SIZE):
        self._redis = client
        self._requeue = Requeuer(client, contract.DLQ_INDEX, contract.DLQ_ENTRIES)
        self.batch_size = batch_size

    def add(
        self,
        event: Event,
        reason: Reason,
        *,
        status: int | None = None,
        response_body: str = "",
        error: str = "",
    ) -> dict[str, Any]:
        now = time.time()
        entry = make_entry(
            event, reason, status=status, response_body=response_body, error=error, now=now
        )
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(contract.DLQ_ENTRIES, event["id"], json.dumps(entry, ensure_ascii=False))
        pipe.zadd(contract.DLQ_INDEX, {event["id"]: now})
        pipe.execute()
        return entry

    def count(self) -> int:
        return int(self._redis.zcard(contract.DLQ_INDEX))

    def list(self, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        """Entries, oldest first."""
        stop = -1 if limit is None else limit - 1
        ids = cast("builtins.list[bytes]", self._redis.zrange(contract.DLQ_INDEX, 0, stop))
        return [entry for chunk in _chunks(ids, REPLAY_CHUNK) for entry in self._load(chunk)]

    def replay_all(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Put every entry dead-lettered up to now back on the queue with fresh attempts.

        Entries arriving during the replay are left for the next one, so a replay always ends.
        Each chunk leaves the DLQ in the same atomic step that queues its events.
        """
        until = time.time()
        replayed = 0
        while True:
            ids = cast(
                "builtins.list[bytes]",
                self._redis.zrangebyscore(
                    contract.DLQ_INDEX, "-inf", until, start=0, num=REPLAY_CHUNK
                ),
            )
            if not ids:
                return replayed
            replayed += self._replay_ids(ids)
            if on_progress is not None:
                on_progress(replayed)

    def replay(self, event_ids: Sequence[str]) -> int:
        """Replay the given entries; ids not in the DLQ are ignored. Returns how many."""
        replayed = 0
        for chunk in _chunks([i.encode() for i in event_ids], REPLAY_CHUNK):
            present = [
                i for i, score in zip(chunk, self._scores(chunk), strict=False) if score is not None
            ]
            replayed += self._replay_ids(present)
        return replayed

    def _replay_ids(self, ids: Sequence[bytes]) -> int:
        if not ids:
            return 0
        events = [fresh_attempts(entry["event"]) for entry in self._load(ids)]
        messages = wire.encode_batches(events, self.batch_size)
        if self._requeue([i.decode() for i in ids], messages):
            return len(events)
        return 0  # another operator replayed or purged some of them meanwhile; re-read

    def _scores(self, ids: Sequence[bytes]) -> builtins.list[float | None]:
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.zscore(contract.DLQ_INDEX, i)
        return list(pipe.execute())

    def _load(self, ids: Sequence[bytes]) -> Iterator[dict[str, Any]]:
        if not ids:
            return
        for raw in self._redis.hmget(contract.DLQ_ENTRIES, list(ids)):
            if raw is not None:
                yield json.loads(raw)


def fresh_attempts(event: Event) -> Event:
    """The event as it goes back to the queue on replay: same id and body, attempts reset."""
    return {**event, "attempts": 0, "history": []}


def _chunks(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
