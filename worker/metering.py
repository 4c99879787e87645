"""What the metrics need that the stats counters do not hold, recorded with each outcome.

One Lua call per outcome, queued on the pipeline the outcome is already written with (no extra
round trip): the labelled counter (event name, HTTP status), the per-minute count the console
charts, and for a delivery its latency histogram bucket. Workers only add; the exporter
(worker/metrics.py) and the console read.

Event names are user data, so their labels are capped: the first
:data:`~producer.contract.METRICS_EVENT_LABELS_MAX` distinct names ever recorded keep their own
label, every later one is counted as ``other``. The set of admitted names lives in Redis and is
checked and grown inside the script, so the cap holds across every worker at once. A name is
admitted for good (delete ``limechat:metrics:event_names`` to start over); an event actually
named ``other`` is counted under ``other`` too.
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
_LATENCY_CAP_SECONDS = 10 * 365 * 86400.0
#: The label every event name past the cap is counted under.
OTHER = "other"
#: The outcomes counted, as the stats counters name them.
OUTCOMES = ("delivered", "retried", "dead_lettered")

# KEYS: admitted names, counters, latency, this minute's hash
# ARGV: outcome, event name, status, cap, latency bucket ('' for none), latency, minute TTL
_RECORD = """
local label = ARGV[2]
if label == 'other' then
elseif redis.call('SISMEMBER', KEYS[1], label) == 0 then
  if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[4]) then
    redis.call('SADD', KEYS[1], label)
  else
    label = 'other'
  end
end
redis.call('HINCRBY', KEYS[2], ARGV[1] .. '|' .. ARGV[3] .. '|' .. label, 1)
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
redis.call('EXPIRE', KEYS[4], ARGV[7])
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  redis.call('HINCRBY', KEYS[3], 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[3], 'sum', ARGV[6])
end
"""
# Sent whole with EVAL (Redis caches it by its SHA1): a registered script's EVALSHA would make
# redis-py ask SCRIPT EXISTS before each pipeline it is on, a round trip per dead letter.


def record(
    pipe: redis.client.Pipeline,
    outcome: str,
    event_name: str,
    status: int | None,
    *,
    created_at: float | None = None,
    now: float | None = None,
) -> None:
    """Queue the metrics of one outcome; ``created_at`` (a delivery's enqueue time) adds its
    latency. ``now`` is this host's clock, like the producer's ``created_at``."""
    now = time.time() if now is None else now
    bucket, latency = "", 0.0
    if created_at is not None:
        # (a producer's clock ahead of ours counts 0; an absurd created_at must not overflow
        # the sum, which would fail the pipeline the delivery is recorded on)
        latency = min(max(now - created_at, 0.0), _LATENCY_CAP_SECONDS)
        bucket = bucket_label(latency)
    pipe.eval(
        _RECORD,
        4,
        contract.METRICS_EVENT_NAMES,
        contract.METRICS_COUNTERS,
        contract.METRICS_LATENCY,
        contract.minute_key(int(now // 60)),
        outcome,
        event_name[: contract.EVENT_NAME_MAX_LENGTH],
        "none" if status is None else str(status),
        contract.METRICS_EVENT_LABELS_MAX,
        bucket,
        repr(round(latency, 6)),
        contract.METRICS_MINUTE_TTL_SECONDS,
    )


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
