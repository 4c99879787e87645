"""SIGKILL stress: one-event messages, a worker killed at random moments, nothing may be lost.

    .venv/bin/python -m bench.kill_stress [--events 3000] [--kills 15] [--runs 3]

Each run queues ``--events`` events with ``send_event`` (one message each), then starts a
worker and SIGKILLs its whole process group at a random moment 0.05 to 0.5 s after it is
ready, ``--kills`` times over, against a receiver that answers at once; a last worker then
delivers what is left. It prints, per run, how many events were delivered, duplicated,
dead-lettered and lost (neither delivered nor dead-lettered once nothing is held in Redis).
Uses Redis database 14 of LIMECHAT_BENCH_REDIS_URL (flushed).
"""

from __future__ import annotations

import argparse
import random
import time

from bench.common import BENCH_REDIS_URL, fresh_redis, machine
from producer import Producer, ProducerSettings
from tests.chaos.receiver import ChaosReceiver
from tests.chaos.support import Tally, nothing_held
from tests.helpers import WorkerProcess, running_worker, wait_for, worker_env

PHONE = "+915673412780"


def one_run(events: int, kills: int, seed: int) -> Tally:
    rng = random.Random(seed)
    r = fresh_redis()
    receiver = ChaosReceiver()
    producer = Producer(ProducerSettings(redis_url=BENCH_REDIS_URL))
    try:
        for seq in range(events):
            producer.send_event("order_placed", phone=PHONE, data={"seq": seq})
        env = worker_env(BENCH_REDIS_URL, receiver.url, LIMECHAT_VISIBILITY_TIMEOUT="3")
        for _ in range(kills):
            worker = WorkerProcess(env).start()
            time.sleep(rng.uniform(0.05, 0.5))
            worker.kill()
        with running_worker(env):
            wait_for(lambda: nothing_held(r), 120, "the last worker to drain everything")
        return Tally.of(range(events), receiver, r)
    finally:
        producer.close()
        receiver.stop()
        r.flushdb()
        r.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("run  events  kills  delivered  duplicates  dead-lettered  lost")
    lost = 0
    for run in range(args.runs):
        tally = one_run(args.events, args.kills, args.seed + run)
        lost += len(tally.missing)
        print(
            f"{run + 1:>3}  {tally.sent:>6}  {args.kills:>5}  {tally.delivered:>9}  "
            f"{tally.duplicates:>10}  {tally.dead_lettered:>13}  {len(tally.missing):>4}"
        )
    print(f"lost in all: {lost} in {args.runs * args.kills} kills")
    raise SystemExit(1 if lost else 0)


if __name__ == "__main__":
    main()
