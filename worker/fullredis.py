"""Riding out a full Redis: wait for memory instead of failing, keep what is held.

With ``maxmemory`` and ``noeviction`` (what a long LimeChat outage can lead to), Redis refuses
every write that may grow memory with ``OOM command not allowed``; reads and deletes still
work. Stock kombu takes that for an unrecoverable error and the worker dies, and the supervisor
then stops every process. Instead, the worker's Redis clients wait and try again (backing off
up to :data:`MAX_WAIT_SECONDS`) until memory is freed: a message taken stays in its taking list
or in the unacked hash, an outcome waits to be written, and delivery resumes by itself.

Lua scripts need no special care: Redis checks memory only before a script's first write, so a
script either runs whole or not at all.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from .stopflag import StopFlag

log = logging.getLogger("limechat_events.worker")

FIRST_WAIT_SECONDS = 0.1
MAX_WAIT_SECONDS = 5.0


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write for want of memory."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.ResponseError) and "maxmemory" in str(exc)
    )


class FullRedisWait:
    """Backs off while Redis is full; logs once when the wait starts, once when it ends.

    ``give_up`` (checked before each pause) ends the wait by raising the refusal: a worker
    asked to stop does not wait for memory, and what it held stays in Redis.
    """

    def __init__(
        self,
        what: str,
        *,
        max_delay: float = MAX_WAIT_SECONDS,
        give_up: Callable[[], bool] | None = None,
    ) -> None:
        self.what = what
        self.max_delay = max_delay
        self.give_up = give_up
        self.delay = FIRST_WAIT_SECONDS
        self.started: float | None = None

    def sleep(self, exc: BaseException) -> None:
        """Pause before the next try (or raise ``exc``, when told to give up)."""
        if self.give_up is not None and self.give_up():
            raise exc
        if self.started is None:
            self.started = time.monotonic()
            log.warning(
                "Redis is full (used memory > maxmemory): waiting for memory to %s;"
                " nothing is dropped",
                self.what,
            )
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, self.max_delay)

    def done(self) -> None:
        if self.started is not None:
            waited = time.monotonic() - self.started
            log.warning("Redis has memory again: %s after %.1f s", self.what, waited)
            self.started = None
        self.delay = FIRST_WAIT_SECONDS


class WaitsWhileFull:
    """Mixin for a ``redis.Redis`` class: commands and pipelines wait out a full Redis.

    ``stop_waiting``, when set, makes a wait give up (the worker is stopping). A pipeline under
    ``WATCH`` is not retried (the watch is gone after the failure): its caller sees the error,
    as it sees a ``WatchError``.
    """

    stop_waiting: StopFlag | None = None

    def _wait(self, what: str) -> FullRedisWait:
        stop = self.stop_waiting
        return FullRedisWait(what, give_up=None if stop is None else stop.is_set)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        wait = self._wait(f"run {args[0] if args else 'a command'}")
        while True:
            try:
                result = super().execute_command(*args, **options)  # type: ignore[misc]
            except redis.ResponseError as exc:
                if not is_full(exc):
                    raise
                wait.sleep(exc)
                continue
            wait.done()
            return result

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = super().pipeline(*args, **kwargs)  # type: ignore[misc]
        wait = functools.partial(self._wait, "write a batch of commands")
        pipe.execute = functools.partial(_execute_while_full, pipe, pipe.execute, wait)
        return pipe


def _execute_while_full(
    pipe: Any, execute: Any, new_wait: Callable[[], FullRedisWait], raise_on_error: bool = True
) -> Any:
    # execute() empties the pipeline whatever happens: keep its commands to send them again.
    stack, scripts = list(pipe.command_stack), set(pipe.scripts)
    watched = pipe.watching
    wait = new_wait()
    while True:
        try:
            result = execute(raise_on_error)
        except redis.ResponseError as exc:
            if watched or not is_full(exc):
                raise
            wait.sleep(exc)
            pipe.command_stack, pipe.scripts = list(stack), set(scripts)
            continue
        wait.done()
        return result


@functools.cache
def waiting_while_full(client_class: type) -> Any:
    """``client_class`` with :class:`WaitsWhileFull` mixed in."""
    return type(f"Patient{client_class.__name__}", (WaitsWhileFull, client_class), {})
