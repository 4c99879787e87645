"""A stop request that a signal handler may set: no lock, unlike ``threading.Event``.

Celery runs its stop handlers in the main thread, and a second stop signal arriving while the
first is handled runs them again, nested: an ``Event.set`` interrupted inside its own lock then
deadlocks (seen: a worker that got SIGTERM from its process group and from the supervisor at
once never stopped). Setting and reading a bool needs no lock under the GIL.
"""

from __future__ import annotations


class StopFlag:
    """Set once, read anywhere (``is_set``), never waited on."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set
