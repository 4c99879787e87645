"""Rate-limit accuracy with real worker processes, and the limiter's own cost per call.

    python -m bench.ratelimit [--seconds 10] [--rates 10,100,500] [--workers 1,4]

For each rate R and number of worker processes, enqueues more events than the run can deliver,
lets the workers deliver to a local counting receiver, and reports the achieved rate over the
run (after the initial burst) and the busiest 1-second window (the limit allows R + burst).
"""

from __future__ import annotations

import argparse
import time

from bench.common import (
    BENCH_REDIS_URL,
    CountingReceiver,
    fresh_redis,
    git_revision,
    machine,
    max_in_window,
    start_workers,
)
from producer import Producer, ProducerSettings
from worker.ratelimit import Rate, RateLimiter

BURST = 5


def accuracy(rate: int, workers: int, seconds: float) -> tuple[float, int]:
    fresh_redis()
    receiver = CountingReceiver()
    producer = Producer(ProducerSettings(redis_url=BENCH_REDIS_URL, batch_size=50))
    producer.send_events(
        [
            {"event": "bench", "phone": "+915673412780", "data": {"i": i}}
            for i in range(int(rate * (seconds + 5)))
        ]
    )
    procs = start_workers(
        workers,
        receiver.url,
        LIMECHAT_RATE_LIMIT=f"{rate}/s",
        LIMECHAT_RATE_BURST=str(BURST),
        LIMECHAT_WORKER_CONCURRENCY="16",
        LIMECHAT_VISIBILITY_TIMEOUT="120",
    )
    try:
        deadline = time.monotonic() + 30
        while not receiver.arrivals and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(seconds + 1)
    finally:
        for p in procs:
            p.stop()
        receiver.stop()
        producer.close()
    start = receiver.arrivals[0]
    run = [t for t in receiver.arrivals if t < start + seconds]
    return (len(run) - BURST) / seconds, max_in_window(run, 1.0)


def limiter_cost(calls: int = 5000) -> float:
    """Microseconds per acquire() that is granted at once, one client, loopback Redis."""
    client = fresh_redis()
    limiter = RateLimiter(client, "bench", Rate(per_second=100_000, burst=1_000_000))
    limiter.acquire()
    started = time.perf_counter()
    for _ in range(calls):
        limiter.acquire()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="10,100,500")
    parser.add_argument("--workers", default="1,4")
    args = parser.parse_args()
    print(
        f"machine: {machine()}; revision {git_revision()}; burst {BURST}; "
        f"{args.seconds:g} s per run"
    )
    print(
        f"{'rate':>6} {'workers':>7} {'achieved/s':>11} {'error':>7} {'worst 1s':>9} {'allowed':>8}"
    )
    for rate in (int(r) for r in args.rates.split(",")):
        for workers in (int(w) for w in args.workers.split(",")):
            achieved, worst = accuracy(rate, workers, args.seconds)
            print(
                f"{rate:>6} {workers:>7} {achieved:>11.1f} {achieved / rate - 1:>+7.1%} "
                f"{worst:>9} {rate + BURST:>8}",
                flush=True,
            )
    print(f"limiter cost: {limiter_cost():.0f} us per granted acquire() (one client, loopback)")
    fresh_redis()


if __name__ == "__main__":
    main()
