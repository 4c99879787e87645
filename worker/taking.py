"""Taking lists: a message taken off the queue stays in Redis until its worker has recorded it.

kombu's Redis transport takes a message with BRPOP and writes its unacked record in a second
round trip; a worker killed between the two loses the message. Our transport takes it with
BLMOVE (Redis 6.2+, which the worker requires) into a list of its own channel instead, and
writes the unacked record in the same Lua call that takes it off that list: at every instant the
message is on the queue, in a taking list or in the unacked hash.

Each channel's list is registered in ``limechat:taking`` with the Redis time at which its
worker last swept. A list not refreshed for a visibility timeout belongs to a worker that is
gone, and whichever worker sweeps next puts its messages back on their queue, marked
redelivered so that the delivered markers are consulted. A live channel also puts back what
is left in its own list (a take whose reply was lost, a connection kombu dropped and the
channel outlived): at the sweep if no move is in flight then, else just before its next take.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

import redis

from producer import contract

log = logging.getLogger("limechat_events.worker")


def redis_now(client: redis.Redis) -> float:
    """Redis' clock, in epoch seconds: the one clock every worker shares."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def register(client: redis.Redis, key: str) -> None:
    """Announce taking list ``key`` (before the first message is moved into it)."""
    client.zadd(contract.TAKING, {key: redis_now(client)})


def mark_redelivered(item: bytes) -> bytes:
    """``item`` with kombu's redelivered flags set, as kombu's own restore does.

    A worker checks the delivered markers only for redelivered messages. Anything that is not
    a message we can read goes back unchanged: the worker's transport dead-letters it.
    """
    try:
        message: Any = json.loads(item)
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return item
    return json.dumps(message).encode()


def recover(client: redis.Redis, key: str, *, forget: bool) -> int:
    """Move every message of taking list ``key`` back to its queue; returns how many.

    WATCH makes this safe against the list's own worker taking a message off it at the same
    moment, and against other workers recovering the same list: one of them moves the
    messages, the others find the list changed and leave it.
    """
    source = contract.taking_source(key)
    with client.pipeline() as pipe:
        try:
            pipe.watch(key)  # type: ignore[no-untyped-call]
            items = cast("list[bytes]", pipe.lrange(key, 0, -1))
            pipe.multi()
            # the oldest is rightmost in the list; pushed last, it is taken first again
            for item in items:
                pipe.rpush(source, mark_redelivered(item))
            pipe.delete(key)
            if forget:
                pipe.zrem(contract.TAKING, key)
            pipe.execute()
        except redis.WatchError:
            return 0
    return len(items)


class Swept(NamedTuple):
    """What one sweep did, and what it left to the channel."""

    #: messages put back on their queue
    moved: int
    #: this channel's lists that held messages while a move into them was in flight: beside
    #: that move's message (recorded and taken off by the time it returns) they may hold a
    #: leftover, which the channel puts back before its next take, when no move is in flight
    busy: list[str]


def sweep(client: redis.Redis, mine: Iterable[str], idle: Iterable[str], max_age: float) -> Swept:
    """Refresh this channel's lists; recover those of dead workers and its own leftovers.

    ``mine`` are this channel's taking lists, ``idle`` those of them with no move in flight
    (anything left there will never be recorded), ``max_age`` the visibility timeout.
    """
    mine, not_moving = list(mine), set(idle)
    now = redis_now(client)
    with client.pipeline(transaction=False) as pipe:
        for key in mine:
            pipe.zadd(contract.TAKING, {key: now})
        pipe.zrangebyscore(contract.TAKING, "-inf", now - max_age)
        for key in mine:
            pipe.llen(key)
        replies = pipe.execute()
    stale = [k.decode() if isinstance(k, bytes) else k for k in replies[len(mine)]]
    holding = [key for key, size in zip(mine, replies[len(mine) + 1 :], strict=True) if size]
    moved = 0
    for key in stale:
        moved += _recovered(client, key, forget=True, whose="a worker that stopped")
    for key in holding:
        if key in not_moving:
            moved += _recovered(client, key, forget=False, whose="this worker (reply lost)")
    return Swept(moved, [key for key in holding if key not in not_moving])


def _recovered(client: redis.Redis, key: str, *, forget: bool, whose: str) -> int:
    count = recover(client, key, forget=forget)
    if count:
        log.warning("put back on the queue %d message(s) taken by %s (%s)", count, whose, key)
    return count
