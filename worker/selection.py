"""Which dead letters an operator means: filters by event, status, reason and time (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STATUS = re.compile(r"^([1-5])(xx|\d\d)$")


class SelectionError(ValueError):
    """A filter value that cannot be understood; the message names the option."""


def parse_time(text: str, now: float, option: str) -> float:
    """``2h`` / ``30m`` / ``7d`` ago, or an ISO 8601 time (UTC if no zone) -> epoch seconds."""
    relative = _RELATIVE.match(text.lower())
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SelectionError(
            f"{option} {text!r}: use a relative time like 30m, 2h, 7d or an ISO time like "
            "2026-11-26T08:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def parse_status(text: str) -> str:
    """``404``, ``4xx`` or ``5xx`` (validated), kept as text."""
    value = text.strip().lower()
    if not _STATUS.match(value):
        raise SelectionError(f"--status {text!r}: use a code like 404, or 4xx / 5xx")
    return value


@dataclass(frozen=True)
class Selection:
    """A filter on dead-letter entries; every field that is set must match."""

    event: str | None = None
    status: str | None = None  # "404", "4xx", "5xx"
    reason: str | None = None
    since: float | None = None  # dead-lettered at or after (epoch seconds)
    until: float | None = None  # dead-lettered at or before
    account: str | None = None  # the event's account, as given when it was sent

    @property
    def needs_entries(self) -> bool:
        """Whether matching needs the entries themselves (time alone is in the index)."""
        return any(v is not None for v in (self.event, self.status, self.reason, self.account))

    def matches(self, entry: dict[str, Any]) -> bool:
        event = entry.get("event") or {}
        if self.event is not None and event.get("event") != self.event:
            return False
        if self.reason is not None and entry.get("reason") != self.reason:
            return False
        if self.account is not None and entry.get("account") != self.account:
            return False
        if self.status is not None and not status_matches(entry.get("status"), self.status):
            return False
        when = entry.get("dead_lettered_at") or 0
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when <= self.until


def status_matches(status: object, pattern: str) -> bool:
    if not isinstance(status, int):
        return False
    if pattern.endswith("xx"):
        return str(status)[0] == pattern[0] and len(str(status)) == 3
    return str(status) == pattern
