"""How many requests each account has out in this worker process, and a cap on them.

Why: a worker process has a fixed number of delivery threads. An account whose answers come
slowly (LimeChat slow for it, or timing out) would otherwise hold every thread and hold back
every other account. With a cap, an account's events beyond it are parked in the retry
schedule (no attempt counted) instead of waiting for a thread of their own.

Parked events come back paced, not all at once: each is given a later return time, spaced by
the account's request time divided by its cap (what this process can send for it), up to
:data:`HORIZON_SECONDS` ahead. So a large backlog of a slow account returns to the queue at
about the pace it can be sent, and its events are taken and parked again at most every
``HORIZON_SECONDS`` while it stays slow.

The request time is the running average of the account's recent answers. Where there is
none, how long its oldest request out has been out: before its first answer (a fixed first
guess of 1 s parked a fast account's burst 0.5 s apart with a cap of 2, seconds ahead, though
it answered in milliseconds), and when its latest answer is older than the horizon (an
account that timed out an hour ago had its next burst parked up to 30 s ahead by that stale
average). Not the age once recent answers are known: a stall of a second or two would then
pace a fast account by the stall and park its events up to the horizon for a hiccup (a
hostile review measured p99 30 s against 2.6 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: The furthest ahead a turned-away event is parked: how late it may come back once the
#: account answers quickly again.
HORIZON_SECONDS = 30.0
#: The shortest spacing of returns (an account at its cap answering in a few milliseconds).
MIN_SPACING_SECONDS = 0.01
#: Weight of the newest request time in the running average.
_WEIGHT = 0.2


def default_cap(threads: int, accounts: int, configured: int) -> int | None:
    """The cap per account: ``configured`` if set (0: automatic).

    Automatic: no cap with a single account (there is no one to hold back); with several, a
    quarter of the threads (at least 1), so three slow accounts still leave a quarter of them.
    """
    if configured > 0:
        return configured
    if accounts <= 1:
        return None
    return max(1, threads // 4)


class AccountLoad:
    """Requests in flight per account (thread-safe), and when turned-away events come back."""

    def __init__(self, cap: Callable[[], int | None], clock: Callable[[], float] = time.monotonic):
        self._cap = cap
        self._clock = clock
        self._lock = threading.Lock()
        #: account -> when each of its requests in flight was claimed (``clock`` time), oldest
        #: first
        self._out: dict[str, list[float]] = {}
        #: account -> running average of its request times (seconds), and when its latest
        #: answer came (``clock`` time)
        self._seconds: dict[str, tuple[float, float]] = {}
        #: account -> the latest return time handed out (``clock`` time), and the spacing it
        #: was paced by
        self._next: dict[str, tuple[float, float]] = {}

    def claim(self, account: str) -> bool:
        """Count a request of ``account`` in flight; False (nothing counted) at its cap."""
        cap = self._cap()
        with self._lock:
            now = self._clock()  # (under the lock: claim times stay in order, oldest first)
            out = self._out.get(account)
            if cap is not None and out is not None and len(out) >= cap:
                return False
            self._out.setdefault(account, []).append(now)
            return True

    def release(self, account: str) -> None:
        """A request :meth:`claim` counted has ended (sent or not)."""
        with self._lock:
            out = self._out.get(account)
            if out:
                # Which one ended is not known: the oldest claim goes, so the age of those
                # left errs young (their events come back sooner, never later).
                del out[0]
            if not out:
                self._out.pop(account, None)

    def observe(self, account: str, seconds: float) -> None:
        """One of ``account``'s requests took ``seconds`` (its answer or its timeout)."""
        with self._lock:
            now = self._clock()
            average = self._recent_average(account, now)
            if average is not None:
                seconds = average + _WEIGHT * (seconds - average)
            self._seconds[account] = (seconds, now)

    def in_flight(self, account: str) -> int:
        with self._lock:
            return len(self._out.get(account, ()))

    def come_back_in(self, account: str, count: int = 1) -> list[float]:
        """Delays (seconds from now) for ``count`` turned-away events of ``account``, paced."""
        cap = self._cap() or 1
        now = self._clock()
        with self._lock:
            spacing = max(MIN_SPACING_SECONDS, self._request_seconds(account, now) / cap)
            at, paced_by = self._next.get(account, (now, spacing))
            at = max(now, at)
            if spacing < paced_by:
                # Faster than the returns ahead were paced for: they take that much less time
                # to send now, and the new ones are not queued behind the old pace.
                at = now + (at - now) * spacing / paced_by
            delays = []
            for _ in range(count):
                at = min(at + spacing, now + HORIZON_SECONDS)
                delays.append(at - now)
            self._next[account] = (at, spacing)
            return delays

    def _request_seconds(self, account: str, now: float) -> float:
        """What a request of ``account`` takes: its running average of recent answers; else
        how long its oldest request out has been out (0 with none out: nothing to wait for)."""
        average = self._recent_average(account, now)
        if average is not None:
            return average
        out = self._out.get(account)
        return now - out[0] if out else 0.0

    def _recent_average(self, account: str, now: float) -> float | None:
        """The running average, unless the account has not answered for the horizon."""
        known = self._seconds.get(account)
        if known is None or now - known[1] > HORIZON_SECONDS:
            return None
        return known[0]
