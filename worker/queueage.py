"""How long the next message in the queue has been waiting: one LINDEX, one decode.

Producers LPUSH and workers take from the right, so the rightmost message is the one that has
waited longest in line. A message carries no time of its own, but each of its events does:
``created_at`` (when it was enqueued) and, after a failed attempt, that attempt's time. The
later of the two is when the event last started waiting; the message's age is that of its
longest-waiting event. Two cases read older than their time in line: a retry counts its
backoff too, and a replayed or imported dead letter counts from its original enqueue.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, TypeGuard

import redis

from producer import contract


def oldest_waiting_age(client: redis.Redis, now: float) -> float:
    """Seconds the next message's longest-waiting event has waited; 0 for an empty queue, or
    a message that is not a readable ``deliver`` task (the worker will dead-letter it)."""
    raw = client.lindex(contract.QUEUE, -1)
    since = waiting_since(raw) if raw is not None else None
    return max(now - since, 0.0) if since is not None else 0.0


def queued_events(raw: bytes | str) -> list[Any] | None:
    """The events a queue message carries (``deliver(events)``), or None if it is not one.

    Never raises: anything can be on the list (deep nesting, huge numbers, any type); the
    worker dead-letters what is not a message of ours.
    """
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        events = json.loads(body)[0][0]
    except Exception:
        return None
    return events if isinstance(events, list) else None


def waiting_since(raw: bytes | str) -> float | None:
    """The earliest time an event of this queue message started waiting, or None."""
    try:
        times = [_since(event) for event in queued_events(raw) or []]
    except Exception:  # (an event of any shape, times too large for a float)
        return None
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _since(event: Any) -> float | None:
    created = event.get("created_at")
    if not _number(created):
        return None
    history = event.get("history") or []
    last = history[-1].get("at") if isinstance(history, list) and history else None
    return max(float(created), float(last)) if _number(last) else float(created)


def _number(value: object) -> TypeGuard[float]:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # (an int too large for a float)
        return False
