"""The producer's connections to Redis: a small pool of redis-py connections, sync and asyncio.

Why not ``redis.Redis`` on a ``BlockingConnectionPool``: a producer call is one command, and for
one command the client and its pool cost more than the round trip itself (on the 2-core VM of
docs/benchmarks.md, about 70 us of Python per call against 40 us for the loopback round trip:
a queue behind a condition variable, observability hooks, the retry wrapper, reply callbacks).
What of redis-py matters is kept: its connections (TCP, TLS, unix sockets, AUTH, SELECT, RESP,
the timeouts), the check as a connection is taken that Redis has not closed it (a restart), a
cap on connections with a bounded wait for a free one, and, for the sync pool, a fresh start
in a child after ``fork()`` (the parent's sockets are not the child's to use).

A call that fails in any way disconnects its connection: a reply left half read must never be
read as the answer to the next call.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

import redis
import redis.asyncio

#: Connections a producer's pool (one per process, or per event loop) opens at most.
MAX_CONNECTIONS = 100


class Connections:
    """Thread-safe; at most ``limit`` connections, the most recently used taken first."""

    def __init__(self, options: dict[str, Any], *, limit: int, wait: float) -> None:
        options = dict(options)
        self._connection_class = options.pop("connection_class", redis.Connection)
        self._options = options
        self._limit = limit
        self._wait = wait
        self._start()
        _LIVE.add(self)

    def _start(self) -> None:
        self._idle: list[Any] = []  # (redis.Connection, untyped; pop and append are atomic)
        self._slots = threading.BoundedSemaphore(self._limit)

    def call(self, *args: Any) -> Any:
        """Send one command and return Redis's reply; any failure is a ``redis.RedisError``."""
        slots = self._slots
        if not slots.acquire(timeout=self._wait):
            raise redis.ConnectionError(
                f"all {self._limit} connections busy for {self._wait:g}s "
                "(too many concurrent sends)"
            )
        try:
            connection = self._take()
            try:
                connection.send_packed_command([packed(args)])
                return connection.read_response()
            except BaseException:
                connection.disconnect()
                raise
            finally:
                self._idle.append(connection)
        finally:
            slots.release()

    def _take(self) -> Any:
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._connection_class(**self._options)
        try:
            if not _connected(connection):
                connection.connect()
            elif _closed_or_dirty(connection):
                connection.disconnect()
                connection.connect()
        except BaseException:
            connection.disconnect()
            self._idle.append(connection)
            raise
        return connection

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()


#: Every live pool, for the fork hook below.
_LIVE: weakref.WeakSet[Connections] = weakref.WeakSet()


def _start_afresh_in_the_child() -> None:
    """A forked child drops its parent's connections (their sockets are the parent's too).

    Run by ``fork()`` in the child before it returns, so before any other thread of the
    child exists: no call can see the pool half reset. The parent's connection objects are
    dropped untouched (redis-py closes only the child's copy of a socket it did not open).
    """
    for pool in list(_LIVE):
        pool._start()


if hasattr(os, "register_at_fork"):  # (not on Windows, which has no fork)
    os.register_at_fork(after_in_child=_start_afresh_in_the_child)


def packed(args: tuple[str | bytes | int | float, ...]) -> bytes:
    """A command of ``str``, ``bytes`` and number arguments in RESP, as redis-py's
    ``pack_command`` writes it, in a fraction of its time (about 13 us a call there: an
    encoder object, and three checks per argument, for what is three short strings here).

    Text is always UTF-8, whatever ``?encoding=`` the URL names: the worker reads UTF-8.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:  # (None, bools, containers: as redis-py does, refused rather than sent as repr)
            raise TypeError(f"a Redis command argument cannot be a {type(arg).__name__}")
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


def _connected(connection: Any) -> bool:
    """Whether a sync connection has its socket (redis-py 6.4 has no ``is_connected``).

    Asked instead of calling ``connect()``, which does nothing when connected but only after
    redis-py's retry wrapper and two calls of its own (15-40 us at 200 requests/s).
    """
    return connection._sock is not None


def _closed_or_dirty(connection: Any) -> bool:
    """Whether Redis closed this idle connection (a restart) or it holds bytes nobody asked for."""
    try:
        return bool(connection.can_read())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return True


class AsyncConnections:
    """The same for one event loop: asyncio connections belong to the loop that opened them.

    Make it inside that loop. The wait for a free connection is bounded by the caller's own
    timeout around the whole call (``producer.aio``).
    """

    def __init__(self, options: dict[str, Any], *, limit: int) -> None:
        options = dict(options)
        self._connection_class = options.pop("connection_class", redis.asyncio.Connection)
        self._options = options
        self._idle: list[Any] = []  # (redis.asyncio.Connection, untyped)
        self._every: set[Any] = set()
        self._slots = asyncio.Semaphore(limit)

    async def call(self, *args: Any) -> Any:
        """Send one command and return Redis's reply; any failure is a ``redis.RedisError``
        (or the cancellation that cut it short)."""
        async with self._slots:
            connection = await self._take()
            try:
                await connection.send_packed_command([packed(args)])
                return await connection.read_response()
            except BaseException:
                await connection.disconnect(nowait=True)
                raise
            finally:
                self._idle.append(connection)

    async def _take(self) -> Any:
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._connection_class(**self._options)
            self._every.add(connection)
        try:
            if not connection.is_connected:
                await connection.connect()
            elif await _async_closed_or_dirty(connection):
                await connection.disconnect()
                await connection.connect()
        except BaseException:
            await connection.disconnect(nowait=True)
            self._idle.append(connection)
            raise
        return connection

    async def aclose(self) -> None:
        """Disconnect every connection, idle or in use (the loop is going away)."""
        self._idle = []
        every, self._every = self._every, set()
        for connection in every:
            await connection.disconnect()


# redis-py 8 renamed (and deprecates) ``can_read_destructive``; 6.4 has only the old name.
_ASYNC_CAN_READ = (
    "can_read" if hasattr(redis.asyncio.Connection, "can_read") else "can_read_destructive"
)


async def _async_closed_or_dirty(connection: Any) -> bool:
    try:
        return bool(await getattr(connection, _ASYNC_CAN_READ)())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return True
