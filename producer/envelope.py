"""The event envelope: what travels through the queue, the retry schedule and the DLQ.

``body`` fields (``distinct_id``, ``phone``, ``event``, ``data``) are what LimeChat receives;
the rest is ours: a stable ``id`` for idempotent handling, the ``account`` it belongs to, when
it was created, how many delivery attempts it has had and what happened on each.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, TypedDict


class Attempt(TypedDict):
    at: float
    status: int | None
    error: str
    ms: int


class _EventFields(TypedDict):
    id: str
    event: str
    phone: str
    distinct_id: str
    data: dict[str, Any]
    account: str | None
    created_at: float
    attempts: int
    history: list[Attempt]


class Event(_EventFields, total=False):
    #: A send time the rate limiter reserved for this event while it waits in the schedule.
    slot_at: float


def new_event(
    event: str,
    phone: str,
    distinct_id: str,
    data: dict[str, Any],
    account: str | None,
    *,
    event_id: str | None = None,
    now: float | None = None,
) -> Event:
    """A fresh envelope (attempts 0) for an already validated event."""
    return {
        "id": event_id or str(uuid.uuid4()),
        "event": event,
        "phone": phone,
        "distinct_id": distinct_id,
        "data": data,
        "account": account,
        "created_at": time.time() if now is None else now,
        "attempts": 0,
        "history": [],
    }


def request_body(event: Event) -> dict[str, Any]:
    """The JSON body LimeChat documents, nothing more."""
    return {
        "distinct_id": event["distinct_id"],
        "phone": event["phone"],
        "event": event["event"],
        "data": event["data"],
    }
