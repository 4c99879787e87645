"""Coalescing: single-event messages waiting on the queue travel on as one batch.

Celery spends about a millisecond of a worker's CPU on each task message whatever it carries,
so a web app's one-event messages cost four times what batches do. When the transport has
taken a message with BLMOVE (worker/transport.py) and more are waiting, it moves some of them
into the same taking list in one Lua call (:data:`MOVE_MORE`), merges the events of all of
them into one ``deliver`` message (:func:`merge`), and records that as unacknowledged while
removing them from the taking list in one more Lua call (``_RECORD`` in worker/transport.py).
At every instant each message is on the queue, in the taking list, or inside the unacknowledged
record, exactly as for a message taken alone (worker/taking.py): nothing is lost to a SIGKILL
between the steps, and a batch that comes back is marked redelivered, so the delivered markers
(worker/markers.py) are read for each of its events.

Nothing is held back: only messages already waiting are moved, never one awaited. Each take
moves a fair share of what waits (the waiting messages over the worker's threads), so
a burst is spread over the threads rather than delivered by one, and at most as many events as
``LIMECHAT_BATCH_SIZE`` travel together; what does not fit goes back to the queue's head.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any, NamedTuple

from producer import wire

#: Most messages one take moves: Lua's unpack() takes about 8,000 values at most, and
#: LIMECHAT_BATCH_SIZE has no upper bound.
MAX_MOVED = 1000

# KEYS[1]: the queue   KEYS[2]: the taking list
# ARGV[1]: most messages to move   ARGV[2]: the worker's threads (the share's divisor)
# Moves a share of the oldest waiting messages into the taking list; returns them, newest
# first. The LPUSH is the first write: a full Redis refuses the call whole.
MOVE_MORE = """
local waiting = redis.call('LLEN', KEYS[1])
local n = math.min(tonumber(ARGV[1]), math.ceil(waiting / tonumber(ARGV[2])))
if n < 1 then return {} end
local items = redis.call('LRANGE', KEYS[1], -n, -1)
redis.call('LPUSH', KEYS[2], unpack(items))
redis.call('LTRIM', KEYS[1], 0, -(#items + 1))
return items
"""


class Merged(NamedTuple):
    #: the message to hand to kombu: the first one as it was, or one carrying every event
    message: dict[str, Any]
    #: raw items that did not fit, oldest last (RPUSHed in this order, the oldest is next)
    put_back: list[bytes]


def events_of(message: dict[str, Any]) -> list[Any] | None:
    """The events a vetted ``deliver`` message carries (None if it cannot be read so)."""
    try:
        if message["properties"]["body_encoding"] != "base64":
            return None
        body = json.loads(base64.b64decode(message["body"]))
        events = body[0][0]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return events if isinstance(events, list) else None


def redelivered(message: dict[str, Any]) -> bool:
    info = message["properties"].get("delivery_info") or {}
    return bool(message["headers"].get("redelivered") or info.get("redelivered"))


def merge(
    first: dict[str, Any], more: list[tuple[bytes, dict[str, Any]]], limit: int, queue: str
) -> Merged:
    """``first`` and those of ``more`` (raw item, vetted message; oldest first) that go to the
    same account, in order while they fit in ``limit`` events, as one message of ``queue``;
    the raw items of the rest, to put back.

    Only one account's events travel together: a batch is delivered one event after another,
    and another account's slow answers must not hold them back (docs/accounts.md).
    """
    events = events_of(first)
    account = _account(events)
    if events is None or account is _MIXED or not more:
        return Merged(first, [raw for raw, _ in reversed(more)])
    merged = list(events)
    again = redelivered(first)
    rest: list[bytes] = []
    full = False
    for raw, message in more:
        carried = events_of(message)
        if full or carried is None or _account(carried) != account:
            rest.append(raw)
        elif len(merged) + len(carried) > limit:
            full = True  # (the account's later messages wait too: they keep their order)
            rest.append(raw)
        else:
            merged += carried
            again = again or redelivered(message)
    if len(rest) == len(more):
        return Merged(first, rest[::-1])
    message = dict(json.loads(wire.encode_message(merged, queue=queue, redelivered=again)))
    message["properties"]["delivery_tag"] = uuid.uuid4().hex
    return Merged(message, rest[::-1])


#: What :func:`_account` returns for events of several accounts.
_MIXED = object()


def _account(events: list[Any] | None) -> object:
    """The account all ``events`` name (None: the default), or :data:`_MIXED`."""
    named = set()
    for event in events or ():
        account = event.get("account") if isinstance(event, dict) else None
        if account is not None and not isinstance(account, str):
            return _MIXED  # (not an event the task will send: let it go alone)
        named.add(account)
    return named.pop() if len(named) == 1 else _MIXED
