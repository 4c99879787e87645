"""Errors a web app sees when it sends an event."""

from __future__ import annotations


class LimechatEventsError(Exception):
    """Base class of every error this package raises on purpose."""


class ValidationError(LimechatEventsError, ValueError):
    """An event was refused before anything was enqueued.

    ``field`` names what is wrong (``phone``, ``event``, ``data.items[2]``...); for
    ``send_events`` ``index`` is the position of the offending item.
    """

    def __init__(self, field: str, message: str, *, index: int | None = None) -> None:
        self.field = field
        self.index = index
        self.reason = message
        where = field if index is None else f"item {index}: {field}"
        super().__init__(f"{where}: {message}")


class EnqueueError(LimechatEventsError):
    """Redis did not confirm the enqueue.

    When Redis refused the command (full, wrong password) or could not be reached, nothing was
    enqueued. When it timed out, the event may have been enqueued all the same, once: the
    producer never sends a command twice. To retry without risking a duplicate, pass an
    ``idempotency_key``: a retry with the same key enqueues nothing if the first try landed.
    """


class ConfigError(LimechatEventsError):
    """An environment variable is missing or malformed; the message names it."""
