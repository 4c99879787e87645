"""One rate limit per LimeChat account, shared by every worker process on every host.

Two GCRA (generic cell rate algorithm) keys per account, both handled by one atomic Lua call
that reads the clock from Redis (``TIME``), so client clocks do not matter:

- the *reservation* key hands out send times ("slots") in order. A worker that gets a slot
  less than ``max_sleep`` away sleeps until it; otherwise the event is parked in the retry
  schedule until just before its slot, holding that slot, so a backlog drains at the
  configured rate without a herd of events competing for the same moment;
- the *gate* key is checked when the slot has come: a strict GCRA conformance test, so no
  window of ``w`` seconds ever carries more than ``rate * w + burst`` requests, even when a
  reservation was used late.

An event that needs no waiting costs one round trip; one that sleeps first, two.

A 429 pauses the account (a key holding the pause's end) for every worker; 429s without a
``Retry-After`` also halve the account's effective rate for a minute (down to 1/16).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import redis

from producer import contract
from producer.errors import ConfigError

#: Highest rate accepted: Redis' clock has microsecond resolution, and the scripts' arithmetic
#: would lose meaning well before one request per microsecond.
MAX_RATE_PER_SECOND = 100_000.0
#: Pause applied by a 429 that carries no (readable) Retry-After.
DEFAULT_429_PAUSE_SECONDS = 5.0
#: How long a rate lowered by 429s stays lowered after the last one.
SLOWDOWN_SECONDS = 60
MIN_RATE_FACTOR = 1 / 16
#: A reservation used later than this after its slot is given up for a fresh one.
STALE_SLOT_SECONDS = 1.0

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")
_OFF = {"off", "none", "unlimited"}


@dataclass(frozen=True)
class Rate:
    """``per_second`` requests a second on average, at most ``burst`` at once."""

    per_second: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds between two requests at the steady rate (GCRA's emission interval)."""
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        """How far ahead of the steady schedule a request may go (GCRA's tau)."""
        return self.interval * (self.burst - 1)

    def __str__(self) -> str:
        return f"{self.per_second:g}/s (burst {self.burst})"


def parse_rate(text: str, burst: int, variable: str = "LIMECHAT_RATE_LIMIT") -> Rate | None:
    """``"10/s"``, ``"600/m"``, ``"5000/h"`` -> :class:`Rate`; ``"off"`` -> None."""
    if text.strip().lower() in _OFF:
        return None
    match = _RATE.match(text.lower())
    if not match or match.group(2) not in _UNITS:
        raise ConfigError(f"{variable}={text!r} must look like 10/s, 600/m or 5000/h (or 'off')")
    per_second = float(match.group(1)) / _UNITS[match.group(2)]
    if not math.isfinite(per_second) or per_second <= 0:
        raise ConfigError(f"{variable}={text!r} must be above zero (use 'off' for no limit)")
    if per_second > MAX_RATE_PER_SECOND:
        raise ConfigError(
            f"{variable}={text!r} is above {MAX_RATE_PER_SECOND:g}/s; use 'off' for no limit"
        )
    if burst < 1:
        raise ConfigError(f"LIMECHAT_RATE_BURST={burst} must be at least 1")
    return Rate(per_second, burst)


# Shared prologue: the clock (Redis' own unless a test passes ARGV[1]), the account's pause and
# its slow-down factor.
# KEYS[2]: pause key (holds the pause's end)   KEYS[3]: factor key (rate multiplier <= 1)
# ARGV[1]: '' (or a time, in tests)   ARGV[2]: emission interval   ARGV[3]: tolerance
_CLOCK = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""
_PROLOGUE = (
    _CLOCK
    + """
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local factor = tonumber(redis.call('GET', KEYS[3]) or '1')
local T = tonumber(ARGV[2]) / factor
local tau = tonumber(ARGV[3]) / factor
local function keep(key, tat)
  -- Expire the key when it no longer constrains anyone; never a zero or negative TTL.
  local ms = math.max(1, math.ceil((tat - now) * 1000) + 1000)
  redis.call('SET', key, string.format('%.6f', tat), 'PX', ms)
end
"""
)

# KEYS[1]: reservation key   KEYS[2]: pause   KEYS[3]: factor   KEYS[4]: gate key
# ARGV[1..3]: as the prologue   ARGV[4]: a slot already held, or ''
# ARGV[5]: seconds after which a held slot is stale
# Returns {slot, wait, go}: the send time (Redis clock), how long from now that is, and '1'
# if the request may go right now (the gate has counted it). A refusal's wait is never 0.
_ACQUIRE = (
    _PROLOGUE
    + """
local function fmt(x) return string.format('%.6f', x) end
local slot = tonumber(ARGV[4])
if not (slot and slot >= pause and slot >= now - tonumber(ARGV[5])) then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  slot = math.max(now, tat - tau, pause)
  keep(KEYS[1], math.max(tat, slot) + T)
end
if slot > now then return {fmt(slot), fmt(slot - now), '0'} end
-- The slot has come: the strict gate decides, counting the request if it may go.
if pause > now then return {fmt(slot), fmt(math.max(pause - now, 0.000001)), '0'} end
local gate = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now)
-- (a microsecond of slack: times are stored to the microsecond, and sums of floats drift)
if now + 0.000001 < gate - tau then
  return {fmt(slot), fmt(math.max(gate - tau - now, 0.000001)), '0'}
end
keep(KEYS[4], gate + T)
return {fmt(slot), '0', '1'}
"""
)

# KEYS[1]: reservation key   KEYS[2]: pause   KEYS[3]: factor
# ARGV[1..3]: as the prologue   ARGV[4]: how many slots
# Returns {now, slots}: ARGV[4] consecutive slots, reserved as that many acquires would (for
# events of a batch that will all be parked: one call instead of one each).
_RESERVE = (
    _PROLOGUE
    + """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local slots = {}
for i = 1, tonumber(ARGV[4]) do
  local slot = math.max(now, tat - tau, pause)
  tat = math.max(tat, slot) + T
  slots[i] = string.format('%.6f', slot)
end
keep(KEYS[1], tat)
return {string.format('%.6f', now), slots}
"""
)

# KEYS[1]: pause key   KEYS[2]: factor key
# ARGV[1]: '' (or a time, in tests)   ARGV[2]: pause seconds   ARGV[3]: 1 to also halve the
# rate   ARGV[4]: minimum factor   ARGV[5]: how long a lowered rate lasts
_PAUSE = (
    _CLOCK
    + """
local untl = now + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > current then
  redis.call('SET', KEYS[1], string.format('%.6f', untl), 'PX',
             math.max(1, math.ceil(tonumber(ARGV[2]) * 1000)))
end
if ARGV[3] == '1' then
  local factor = tonumber(redis.call('GET', KEYS[2]) or '1')
  factor = math.max(tonumber(ARGV[4]), factor / 2)
  redis.call('SET', KEYS[2], string.format('%.6f', factor), 'EX', tonumber(ARGV[5]))
end
return string.format('%.6f', untl)
"""
)


@dataclass(frozen=True)
class Grant:
    """The limiter's answer: send now (``go``), or the slot held and how long until it."""

    at: float  # the slot, on Redis' clock
    wait: float  # seconds from now; 0 when go
    go: bool


class RateLimiter:
    """The cluster-wide limit of one account."""

    def __init__(self, client: redis.Redis, account: str, rate: Rate) -> None:
        self.rate = rate
        self.account = account
        self._acquire = client.register_script(_ACQUIRE)
        self._reserve = client.register_script(_RESERVE)
        self._pause = client.register_script(_PAUSE)
        self._keys = contract.rate_keys(account)

    def acquire(self, held: float | None = None, *, now: float | None = None) -> Grant:
        """Permission to send now, or a reserved slot to wait for; one round trip.

        ``held`` is a slot reserved earlier (kept unless stale or overtaken by a pause).
        ``now`` replaces Redis' clock, for tests of the arithmetic.
        """
        at, wait, go = self._acquire(
            keys=[self._keys.reserve, self._keys.pause, self._keys.factor, self._keys.gate],
            args=[
                _clock(now),
                repr(self.rate.interval),
                repr(self.rate.tolerance),
                "" if held is None else f"{held:.6f}",
                STALE_SLOT_SECONDS,
            ],
        )
        return Grant(float(at), float(wait), go in (b"1", "1"))

    def reserve(self, count: int, *, now: float | None = None) -> tuple[float, list[float]]:
        """``count`` slots in a row, and Redis' clock: for events that all wait (one call)."""
        at, slots = self._reserve(
            keys=[self._keys.reserve, self._keys.pause, self._keys.factor],
            args=[_clock(now), repr(self.rate.interval), repr(self.rate.tolerance), count],
        )
        return float(at), [float(s) for s in slots]

    def pause(self, seconds: float | None, *, now: float | None = None) -> float:
        """Stop every worker's deliveries for this account; returns the pause's end.

        ``seconds`` None means the 429 said nothing: pause for the default and lower the rate.
        """
        slow_down = seconds is None
        until = self._pause(
            keys=[self._keys.pause, self._keys.factor],
            args=[
                _clock(now),
                repr(DEFAULT_429_PAUSE_SECONDS if seconds is None else max(seconds, 0.001)),
                "1" if slow_down else "0",
                repr(MIN_RATE_FACTOR),
                SLOWDOWN_SECONDS,
            ],
        )
        return float(until)


def _clock(now: float | None) -> str:
    return "" if now is None else f"{now:.6f}"
