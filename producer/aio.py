"""``send_event`` and ``send_events`` as coroutines, on ``redis.asyncio``, for async web apps.

>>> from producer.aio import send_event
>>> await send_event("order_placed", phone="+915673412780")  # doctest: +SKIP

The same validation, messages, errors and idempotency script as the sync API (both build
them with ``producer.api``); the call gives up within ``LIMECHAT_ENQUEUE_TIMEOUT_SECONDS``.

An asyncio connection belongs to the event loop that opened it, so each loop gets a pool of
its own. A pool is closed when its loop shuts down its async generators (``asyncio.run``,
uvicorn, pytest-asyncio all do): a small generator started in that loop waits for exactly that
moment. A pool whose loop was closed without it is forgotten on the next call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Iterable, Mapping
from typing import Any, TypeVar

import redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import contract
from .api import (  # (the private two: the sync API's error wrapping, shared as it is)
    PreparedEvent,
    _enqueue_errors,
    _Where,
    bounded_options,
    prepare_envelope,
    prepare_event,
    prepare_events,
)
from .config import ProducerSettings, check_redis_url
from .connections import MAX_CONNECTIONS, AsyncConnections
from .envelope import Event

T = TypeVar("T")


@dataclasses.dataclass
class _LoopPool:
    """One event loop's connections, and what closes them with the loop."""

    connections: AsyncConnections
    closer: AsyncGenerator[None, None] | None = None


class AsyncProducer:
    """Sends events from coroutines; one per process is enough, whatever the loops."""

    def __init__(self, settings: ProducerSettings | None = None) -> None:
        self.settings = settings or ProducerSettings.from_env(os.environ)
        check_redis_url(self.settings.redis_url)
        self._where = _Where(self.settings.redis_url)
        self._options: dict[str, Any] = {
            **bounded_options(parse_url(self.settings.redis_url), self.settings.enqueue_timeout),
            "retry": Retry(NoBackoff(), 0),
            # No timeout of redis-py's on reads and writes: ``_bounded`` bounds the whole call,
            # and redis-py times a write with ``asyncio.wait_for``, which costs a task per
            # command on Python 3.11 (about 40 us of a 0.3 ms call).
            "socket_timeout": None,
        }
        # (a plain dict, not a WeakKeyDictionary: each pool's sockets hold their loop)
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._lock = threading.Lock()  # (loops may run in several threads)

    async def send_event(
        self,
        event: str,
        *,
        phone: str,
        distinct_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        account: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate one event and enqueue it; returns its id. See ``producer.Producer``."""
        return await self._enqueue(
            prepare_event(self.settings, event, phone, distinct_id, data, account, idempotency_key)
        )

    async def enqueue_event(self, envelope: Event, key: str | None = None) -> str:
        """Enqueue an envelope ``build_event`` made (and a checked idempotency key); returns
        the id on the queue. See ``producer.Producer.enqueue_event``: for callers that
        validate now and enqueue later (``producer.sqlalchemy.aio.send_event_on_commit``)."""
        return await self._enqueue(prepare_envelope(self.settings, envelope, key))

    async def _enqueue(self, prepared: PreparedEvent) -> str:
        pool = await self._pool()
        with _enqueue_errors(self._where):
            reply = await self._bounded(pool.connections.call(*prepared.command))
        return prepared.queued_id(reply)

    async def send_events(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate every item, then enqueue all of them or none; returns their ids in order."""
        ids, messages = prepare_events(items, self.settings.batch_size)
        if messages:
            await self.enqueue_messages(messages)
        return ids

    async def enqueue_messages(self, messages: list[str]) -> None:
        """LPUSH encoded task messages in one command (all or none), in order."""
        pool = await self._pool()
        with _enqueue_errors(self._where):
            await self._bounded(pool.connections.call("LPUSH", contract.QUEUE, *messages))

    async def ping(self) -> None:
        """Check that Redis answers (a readiness probe); ``EnqueueError`` if it does not."""
        pool = await self._pool()
        with _enqueue_errors(self._where):
            await self._bounded(pool.connections.call("PING"))

    async def aclose(self) -> None:
        """Close this loop's connections (the next call opens new ones)."""
        pool = self._pools.get(asyncio.get_running_loop())
        if pool is not None and pool.closer is not None:
            await pool.closer.aclose()  # (its ``finally`` forgets the pool and closes it)

    async def _bounded(self, call: Awaitable[T]) -> T:
        """``call``'s result, or ``redis.TimeoutError`` once the enqueue timeout has passed.

        The connect timeout bounds opening a connection; this bounds the whole call (there is
        no per-read timeout of redis-py's), the wait for a free connection included. A read
        cut short disconnects its connection (``AsyncConnections.call``), so no later call
        can read a stale reply.
        """
        try:
            if sys.version_info >= (3, 11):  # (no task of its own, unlike wait_for on 3.10)
                async with asyncio.timeout(self.settings.enqueue_timeout):
                    return await call
            return await asyncio.wait_for(call, self.settings.enqueue_timeout)
        except asyncio.TimeoutError:
            raise redis.TimeoutError(
                f"no answer within {self.settings.enqueue_timeout:g}s "
                "(the event may have been enqueued all the same, once)"
            ) from None

    async def _pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        with self._lock:
            for stale in [other for other in self._pools if other.is_closed()]:
                del self._pools[stale]  # (closed without shutting down its async generators)
            pool = _LoopPool(AsyncConnections(self._options, limit=MAX_CONNECTIONS))
            self._pools[loop] = pool
        pool.closer = self._close_with_loop(loop, pool)
        await pool.closer.__anext__()  # (its first step registers it with the running loop)
        return pool

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, pool: _LoopPool
    ) -> AsyncGenerator[None, None]:
        """Suspended until ``loop.shutdown_asyncgens()`` (or until it is dropped), then closes."""
        try:
            yield
        finally:
            with self._lock:
                if self._pools.get(loop) is pool:
                    del self._pools[loop]
            await pool.connections.aclose()


_default: AsyncProducer | None = None
_default_lock = threading.Lock()


def configure(settings: ProducerSettings | None = None, **overrides: Any) -> AsyncProducer:
    """Replace the process-wide async producer (settings from the environment, then overrides).

    The replaced producer's pools close in their own loops (they are dropped, and each loop
    runs the finaliser of the generator that was waiting to close them).
    """
    global _default
    base = settings or ProducerSettings.from_env(os.environ)
    producer = AsyncProducer(dataclasses.replace(base, **overrides))
    with _default_lock:
        _default = producer
    return producer


def default_producer() -> AsyncProducer:
    """The process-wide async producer, created from the environment on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = AsyncProducer()
    return _default


async def send_event(
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Validate and enqueue one event; returns its id. See ``producer.send_event``.

    Raises :class:`~producer.ValidationError` (nothing enqueued) or
    :class:`~producer.EnqueueError` (Redis did not answer within
    ``LIMECHAT_ENQUEUE_TIMEOUT_SECONDS``).
    """
    return await default_producer().send_event(
        event,
        phone=phone,
        distinct_id=distinct_id,
        data=data,
        account=account,
        idempotency_key=idempotency_key,
    )


async def send_events(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """Validate all items, then enqueue all or none. See ``producer.send_events``."""
    return await default_producer().send_events(items)


async def ping() -> None:
    """Raise ``EnqueueError`` if Redis does not answer in time: a readiness probe."""
    await default_producer().ping()


async def aclose() -> None:
    """Close the process-wide producer's connections of the running loop.

    Only needed for a loop you run and close by hand without ``loop.shutdown_asyncgens()``.
    """
    if _default is not None:
        await _default.aclose()
