"""What an answer from LimeChat means for an event: delivered, retry later, or dead-letter."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Reason(str, Enum):
    """Why an event was retried or dead-lettered; stored in the DLQ and shown by the CLI."""

    # retried (and the final reason when attempts run out on them)
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "http_429"
    HTTP_TIMEOUT = "http_408_425"
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    # dead-lettered at once
    AUTH = "auth"
    HTTP_4XX = "http_4xx"
    REDIRECT = "redirect"
    UNKNOWN_ACCOUNT = "unknown_account"
    MALFORMED = "malformed"
    INTERNAL = "internal_error"
    # what a dead letter says when the retry budget ran out
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class Delivered:
    status: int


@dataclass(frozen=True)
class Retry:
    reason: Reason
    status: int | None
    retry_after: float | None = None


@dataclass(frozen=True)
class DeadLetter:
    reason: Reason
    status: int | None


Outcome = Delivered | Retry | DeadLetter

_RETRYABLE_4XX = {408: Reason.HTTP_TIMEOUT, 425: Reason.HTTP_TIMEOUT, 429: Reason.RATE_LIMITED}


def classify_status(status: int, retry_after: float | None = None) -> Outcome:
    """The table in the README, for an HTTP status LimeChat answered with."""
    if 200 <= status < 300:
        return Delivered(status)
    if status in _RETRYABLE_4XX:
        return Retry(_RETRYABLE_4XX[status], status, retry_after)
    if status in (401, 403):
        return DeadLetter(Reason.AUTH, status)
    if 300 <= status < 400:
        # Redirects are not followed: requests would turn the POST into a GET, and the token
        # must not travel to a host nobody configured.
        return DeadLetter(Reason.REDIRECT, status)
    if 400 <= status < 500:
        return DeadLetter(Reason.HTTP_4XX, status)
    # 5xx, and anything outside HTTP's ranges, is the server's problem: try again later.
    return Retry(Reason.HTTP_5XX, status, retry_after)


def classify_error(timed_out: bool) -> Retry:
    """No answer at all: a timeout, or a refused/reset connection."""
    return Retry(Reason.TIMEOUT if timed_out else Reason.CONNECTION, None)
