"""What recording the metrics adds to each outcome a worker writes.

    python -m bench.metering [--events 20000] [--rounds 5]

"before" is what ``count_outcome`` queued until the metrics came: three HINCRBY of the stats
counters. "after" is ``count_outcome`` now: one EVAL (worker/metering.py) writing those and the
metrics. "first design" kept the three HINCRBY and added a Lua call for the metrics. Two
shapes, as the worker writes them: deliveries 50 to a pipeline with their delivered markers
(one round trip per batch), and one outcome per pipeline (a retry or a dead letter). Rounds
alternate the variants, so all see the same machine load; the median round is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import redis

from bench.common import fresh_redis, git_revision, machine
from producer import contract
from worker.metering import bucket_label
from worker.stats import count_outcome

NAMES = [f"event_{i}" for i in range(150)]  # (past the label cap: "other" is exercised too)


def before(pipe: redis.client.Pipeline, outcome: str, name: str, status: int | None) -> None:
    """count_outcome as it was: the stats counters only."""
    key = contract.STATS_COUNTERS
    pipe.hincrby(key, outcome, 1)
    pipe.hincrby(key, f"{outcome}:event:{name}", 1)
    pipe.hincrby(key, f"status:{status if status is not None else 'none'}", 1)


# The first design, kept to compare: the stats HINCRBYs, then one Lua call for the metrics.
_ONE_CALL = """
local label = ARGV[2]
if redis.call('SISMEMBER', KEYS[1], label) == 0 then
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


def one_lua_call(pipe: redis.client.Pipeline, outcome: str, name: str, status: int | None) -> None:
    before(pipe, outcome, name, status)
    latency = 0.2 if outcome == "delivered" else None
    pipe.eval(
        _ONE_CALL,
        4,
        "limechat:bench:names",
        "limechat:bench:counters",
        "limechat:bench:latency",
        contract.minute_key(int(time.time() // 60)),
        outcome,
        name,
        str(status),
        contract.METRICS_EVENT_LABELS_MAX,
        bucket_label(latency) if latency is not None else "",
        repr(latency or 0.0),
        contract.METRICS_MINUTE_TTL_SECONDS,
    )


def after(pipe: redis.client.Pipeline, outcome: str, name: str, status: int | None) -> None:
    count_outcome(pipe, outcome, name, status, created_at=time.time() - 0.2)


Count = Callable[[redis.client.Pipeline, str, str, int | None], None]


def batched(client: redis.Redis, count: Count, events: int) -> float:
    """Seconds for ``events`` deliveries, 50 to a pipeline with their markers."""
    started = time.perf_counter()
    for start in range(0, events, 50):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(events, start + 50)):
            pipe.set(contract.delivered_key(str(i)), "1", ex=60)
            count(pipe, "delivered", NAMES[i % len(NAMES)], 200)
        pipe.execute()
    return time.perf_counter() - started


def single(client: redis.Redis, count: Count, events: int) -> float:
    """Seconds for ``events`` outcomes, one pipeline (one round trip) each."""
    started = time.perf_counter()
    for i in range(events):
        pipe = client.pipeline(transaction=False)
        count(pipe, "retried", NAMES[i % len(NAMES)], 503)
        pipe.execute()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client = fresh_redis()
    print(f"machine: {machine()}\nrevision: {git_revision()}")
    print(f"{args.events} outcomes per round, {args.rounds} rounds each, median round\n")
    print("| shape | before (µs/outcome) | after | added | first design (+1 Lua call) | added |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for shape, run, events in (
        ("deliveries, 50 per pipeline", batched, args.events),
        ("one outcome per pipeline", single, max(args.events // 4, 1)),
    ):
        times: dict[str, list[float]] = {"before": [], "after": [], "lua": []}
        for _ in range(args.rounds):
            for label, count in (("before", before), ("after", after), ("lua", one_lua_call)):
                times[label].append(run(client, count, events) / events * 1e6)
        b, a, lua = (statistics.median(times[k]) for k in ("before", "after", "lua"))
        print(f"| {shape} | {b:.1f} | {a:.1f} | {a - b:+.1f} | {lua:.1f} | {lua - b:+.1f} |")
    client.flushdb()


if __name__ == "__main__":
    main()
