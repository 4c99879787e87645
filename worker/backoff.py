"""Retry timing as pure functions: time and randomness are passed in, so tests need no clock."""

from __future__ import annotations

import math
import re
from email.utils import parsedate_to_datetime

# ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses.
_SECONDS = re.compile(r"^[0-9]+$")


def backoff_delay(attempts: int, base: float, cap: float, rand: float) -> float:
    """Full-jitter exponential backoff: uniform in ``[0, min(cap, base * 2**(attempts-1))]``.

    ``attempts`` counts the failed attempts so far (1 after the first); ``rand`` is a number
    in ``[0, 1)``. Full jitter spreads a crowd of retries over the whole window, so events that
    failed together (an outage) do not come back together.
    """
    exponent = max(attempts - 1, 0)
    # 2**exponent overflows a float past ~1024; the cap is reached long before.
    ceiling = cap if exponent >= 64 else min(cap, base * 2.0**exponent)
    return max(0.0, ceiling * rand)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date), or None.

    A date in the past means "now" (0); anything unreadable is ignored (None), and the
    caller falls back to its own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.match(text):
        # Absurdly many digits would overflow a float; the caller caps the wait anyway.
        return float(int(text)) if len(text) <= 15 else math.inf
    if len(text) > 64:  # no HTTP-date is this long
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an unzoned one is read as such
        return None
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_delay(
    attempts: int, base: float, cap: float, rand: float, retry_after: float | None
) -> float:
    """When to try again: the backoff, but never sooner than LimeChat asked; at most ``cap``."""
    delay = backoff_delay(attempts, base, cap, rand)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)
