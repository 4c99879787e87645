"""Where our worker's time goes per event: py-spy on a real worker while it drains a queue.

    python -m bench.profile [--mode single|batch] [--events N] [--out DIR] [--env K=V ...]

Fills the queue (one event per message, or batch messages), starts ``py-spy record --gil``
on the worker process, lets it deliver to the benchmark receiver, and prints the share of
the worker's GIL time (what bounds one Python process) by category, with the worker's CPU
milliseconds per event. ``--gil`` samples only the thread holding the GIL, so the shares add
up to where the one usable core goes. The raw collapsed stacks are kept in ``--out`` for
flame graphs (``py-spy`` itself: ``pip install py-spy``; not needed by anything else).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import BENCH_REDIS_URL, ROOT, Service, Services, fresh_redis
from bench.receiver import Receiver
from bench.run import Ours, Plan, deliver_run, ours_env
from producer import Producer, ProducerSettings

# (category, frames that put a sample in it), checked in this order against the whole stack.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("log_outcome", "(logging/__init__.py)")),
    ("HTTP POST (client library)", ("LimechatClient.post", "LimechatClient._post")),
    (
        "outcome bookkeeping in Redis (delivered marker, counters, park, DLQ)",
        (
            "Deliverer._delivered",
            "Deliverer._flush",
            "Deliverer._park",
            "Deliverer._dead_letter",
            "MarkerWriter.",
        ),
    ),
    ("redelivery check (MGET of markers)", ("Deliverer._already_delivered",)),
    ("rate limiter", ("Deliverer._take_slot",)),
    ("scheduler thread", ("Promoter.run",)),
    ("our task code, other", ("Deliverer.", "envelope_problem")),
    ("Celery/kombu: receive, track, ack, trace a message", ("(celery/", "(kombu/", "(vine/")),
)
# py-spy sometimes gets only the innermost frames of a stack: those go by the leaf's module.
LEAF_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("(logging/",)),
    (
        "HTTP POST (client library)",
        ("(requests/", "(urllib3/", "(http/client.py", "(email/", "(urllib/"),
    ),
    ("Redis client, unattributed", ("(redis/",)),
    ("Celery/kombu: receive, track, ack, trace a message", ("(celery/", "(kombu/", "(vine/")),
)


def _category(frames: list[str]) -> str:
    for name, markers in CATEGORIES:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    for name, markers in LEAF_CATEGORIES:
        if any(marker in frames[-1] for marker in markers):
            return name
    return "other (thread pool, truncated stacks)"


def categorise(stacks_path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    by_category: collections.Counter[str] = collections.Counter()
    by_frame: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks_path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in {f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames}:
            by_frame[frame] += count
        by_category[_category(frames)] += count
    return total, by_category, by_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("single", "batch"), default="batch")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--env", action="append", default=[], help="worker environment K=V")
    parser.add_argument("--stacks", type=Path, help="only analyse these saved stacks")
    args = parser.parse_args()
    if args.stacks:
        report(args.stacks, None)
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    stacks = args.out / f"profile-{args.mode}.txt"
    overrides = dict(pair.split("=", 1) for pair in args.env)

    fresh_redis()
    receiver = Receiver()
    producer = Producer(ProducerSettings(redis_url=BENCH_REDIS_URL))
    # Readiness is logged at INFO; a worker run at a quieter level is waited for by its banner.
    quiet = overrides.get("LOG_LEVEL", "INFO") not in ("INFO", "DEBUG")
    worker = Service(
        "profiled",
        [sys.executable, "-m", "worker", "worker"],
        ours_env(receiver, **overrides),
        args.out,
    )
    try:
        worker.start(".> limechat:events" if quiet else "worker ready")
        if quiet:
            time.sleep(2)
        spy = subprocess.Popen(
            [
                py_spy,
                "record",
                f"--pid={worker.pid}",
                f"--rate={args.rate}",
                "--format=raw",
                "--gil",
                "--nonblocking",
                f"--output={stacks}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.5)  # py-spy attached before the first message
        plan = Plan.full()
        figures = deliver_run(
            Ours(producer),
            Services([worker]),
            receiver,
            args.events,
            plan,
            batch=args.mode == "batch",
        )
        spy.send_signal(2)
        spy.wait(30)
    finally:
        worker.stop()
        receiver.stop()
        producer.close()
        fresh_redis()
    print(f"{args.mode}: {figures['per_s']:.0f} events/s, ", end="")
    report(stacks, figures["cpu_ms_per_event"])


def report(stacks: Path, cpu_ms: float | None) -> None:
    total, by_category, by_frame = categorise(stacks)
    if cpu_ms is not None:
        print(f"worker CPU {cpu_ms:.2f} ms per event; {total} GIL samples")
    for name, count in by_category.most_common():
        share = count / total
        ms = f"~{share * cpu_ms:.2f} ms  " if cpu_ms is not None else ""
        print(f"  {share:6.1%}  {ms}{name}")
    print("top frames (inclusive):")
    for frame, count in by_frame.most_common(40):
        print(f"  {count / total:6.1%}  {frame}")
    print(f"stacks: {stacks}")


if __name__ == "__main__":
    main()
