"""Every counter an outcome adds to, in one Lua call on the pipeline it is written with.

The stats counters ``limechat-events stats`` shows (worker/stats.py reads them), and what the
metrics need besides: the counter by outcome, HTTP status and event label, the per-minute count
the console charts (a hash per minute, kept two hours), and for a delivery its latency
histogram bucket and sum. One command per outcome, or per batch for a batch's deliveries
(:class:`Tally`): redis-py spends more per command queued than Redis spends running the script
(docs/benchmarks.md, "Metrics recording"), so this costs less than the three HINCRBYs the
stats counters alone used to. Workers only add; the exporter
(worker/metrics.py) and the console read.

Event names are user data, so their labels are capped: the first
:data:`~producer.contract.METRICS_EVENT_LABELS_MAX` distinct names ever recorded keep their own
label, every later one is counted as ``other``. The script checks and grows the set of
admitted names, so the cap holds across every worker at once. A name is admitted for good
(delete ``limechat:metrics:event_names`` to start over); an event actually named ``other`` is
counted under ``other`` too. The stats counters keep every name, as they always have.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

import redis

from producer import contract

#: Latency histogram upper bounds, in seconds (from enqueue to LimeChat's 2xx: queueing,
#: rate-limit waits and retries included, so the range runs to hours).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
)
#: The latency hash's field holding the sum, in whole milliseconds (HINCRBY, not a float);
#: every other field is a bucket's ``le``, and the count is their sum.
SUM_FIELD = "sum_ms"
_LATENCY_CAP_SECONDS = 10 * 365 * 86400.0
#: The label every event name past the cap is counted under.
OTHER = "other"
#: The outcomes counted, as the stats counters name them.
OUTCOMES = ("delivered", "retried", "dead_lettered")

# KEYS: stats counters, admitted names, labelled counters, this minute's hash, latency
# ARGV: outcome, cap, minute TTL, how many outcomes, latency sum (ms), how many latency
# buckets, then each bucket's (le, count), then (event name, status, count) per group
# One call for a whole batch's outcomes: the totals once, each (name, status) group once.
_RECORD = """
local outcome, cap, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local total, nbuckets = ARGV[4], tonumber(ARGV[6])
redis.call('HINCRBY', KEYS[1], outcome, total)
redis.call('HINCRBY', KEYS[4], outcome, total)
redis.call('EXPIRE', KEYS[4], ttl)
local i = 7
for _ = 1, nbuckets do
  redis.call('HINCRBY', KEYS[5], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if nbuckets > 0 then redis.call('HINCRBY', KEYS[5], 'sum_ms', ARGV[5]) end
while i + 2 <= #ARGV do
  local name, status, n = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HINCRBY', KEYS[1], outcome .. ':event:' .. name, n)
  redis.call('HINCRBY', KEYS[1], 'status:' .. status, n)
  local label = name
  if label ~= 'other' and redis.call('SISMEMBER', KEYS[2], label) == 0 then
    if redis.call('SCARD', KEYS[2]) < cap then
      redis.call('SADD', KEYS[2], label)
    else
      label = 'other'
    end
  end
  redis.call('HINCRBY', KEYS[3], outcome .. '|' .. status .. '|' .. label, n)
  i = i + 3
end
"""
# (sent whole with EVAL, which Redis caches by its SHA1: EVALSHA would need redis-py's
# SCRIPT EXISTS before each pipeline, or fail the pipeline after Redis restarts)


class Tally:
    """The outcomes of one kind (delivered, retried, ...) of a batch, summed for one write."""

    def __init__(self) -> None:
        self.count = 0
        self.groups: dict[tuple[str, str], int] = {}
        self.latency: dict[str, int] = {}
        self.sum_ms = 0

    def add(
        self, event_name: str, status: int | None, *, created_at: float | None, now: float
    ) -> None:
        """One outcome; ``created_at`` (a delivery's enqueue time) adds its latency."""
        self.count += 1
        group = (event_name, "none" if status is None else str(status))
        self.groups[group] = self.groups.get(group, 0) + 1
        if created_at is not None:
            # (a producer's clock ahead of ours counts 0; an absurd created_at is capped)
            latency = min(max(now - created_at, 0.0), _LATENCY_CAP_SECONDS)
            bucket = bucket_label(latency)
            self.latency[bucket] = self.latency.get(bucket, 0) + 1
            self.sum_ms += round(latency * 1000)

    def write(self, pipe: redis.client.Pipeline, outcome: str, now: float) -> None:
        """Queue the counters on ``pipe`` (one command)."""
        if not self.count:
            return
        args: list[str | int] = [
            outcome,
            contract.METRICS_EVENT_LABELS_MAX,
            contract.METRICS_MINUTE_TTL_SECONDS,
            self.count,
            self.sum_ms,
            len(self.latency),
        ]
        for le, n in self.latency.items():
            args += [le, n]
        for (name, status), n in self.groups.items():
            args += [name, status, n]
        pipe.eval(
            _RECORD,
            5,
            contract.STATS_COUNTERS,
            contract.METRICS_EVENT_NAMES,
            contract.METRICS_COUNTERS,
            contract.minute_key(int(now // 60)),
            contract.METRICS_LATENCY,
            *args,
        )


def record(
    pipe: redis.client.Pipeline,
    outcome: str,
    event_name: str,
    status: int | None,
    *,
    created_at: float | None = None,
    now: float | None = None,
) -> None:
    """Queue the counters of one outcome; ``created_at`` (a delivery's enqueue time) adds its
    latency. ``now`` is this host's clock, like the producer's ``created_at``."""
    now = time.time() if now is None else now
    tally = Tally()
    tally.add(event_name, status, created_at=created_at, now=now)
    tally.write(pipe, outcome, now)


def bucket_label(seconds: float) -> str:
    """The ``le`` of the smallest bucket holding ``seconds`` (``+Inf`` past the last)."""
    index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return "+Inf" if index == len(LATENCY_BUCKETS) else _le(LATENCY_BUCKETS[index])


def _le(bound: float) -> str:
    return repr(float(bound))


def per_minute(
    client: redis.Redis, minutes: int = 60, now: float | None = None
) -> list[dict[str, Any]]:
    """Delivered, retried and dead-lettered per minute, oldest first, the current minute last.

    Each item: ``{"minute": epoch seconds of its start, "delivered": n, "retried": n,
    "dead_lettered": n}``; a minute nothing happened in counts zeros. Minutes are the workers'
    clocks; ``now`` defaults to Redis' clock.
    """
    if minutes < 1:
        raise ValueError(f"minutes must be at least 1, not {minutes}")
    if now is None:
        seconds, micros = client.time()
        now = seconds + micros / 1_000_000
    last = int(now // 60)
    span = range(last - minutes + 1, last + 1)
    pipe = client.pipeline(transaction=False)
    for minute in span:
        pipe.hmget(contract.minute_key(minute), list(OUTCOMES))
    rows = pipe.execute()
    return [
        {"minute": minute * 60, **{o: int(v or 0) for o, v in zip(OUTCOMES, row, strict=True)}}
        for minute, row in zip(span, rows, strict=True)
    ]


def parse_counter_field(field: str) -> tuple[str, str, str] | None:
    """``outcome|status|label`` -> its parts (the label may hold ``|``); None if not ours."""
    parts = field.split("|", 2)
    if len(parts) != 3 or parts[0] not in OUTCOMES:
        return None
    return parts[0], parts[1], parts[2]
