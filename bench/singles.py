"""Issue 12's table: single events through ours, Dramatiq, Celery and arq, and their Redis costs.

    python -m bench.singles [--events N] [--out DIR] [--systems ours,dramatiq,...] [--repeat K]

For each system, with its documented defaults on this machine: fill its queue with N events,
one per message, while its worker is stopped (SIGSTOP), then let it deliver them to the fast
keep-alive receiver (bench/receiver.py) and measure

- delivered per second at the receiver, first arrival to last;
- Redis commands per delivered event, server-side: ``CONFIG RESETSTAT`` just before the
  worker resumes, ``INFO commandstats`` when the last event arrived (idle polling, sweeps,
  heartbeats and the commands Lua scripts run all count; ``INFO``/``CONFIG`` themselves not).
  The enqueue side is counted apart, per event;
- Redis memory retained per delivered event: ``used_memory`` after the run minus before the
  fill (the queue is empty again by then), and for ours the delivered markers alone (``MEMORY
  USAGE`` of each), with what that means averaged over a day at a million events a day.

Then, for ours (and Dramatiq for comparison): latency from ``send_event`` to the receiver with
one event at a time (idle), and under a steady 200 events/s.

It runs its own ``redis-server`` (no persistence) on a free port, because ``INFO commandstats``
is server-wide: on a shared Redis, other clients' commands would be counted. Set
``LIMECHAT_BENCH_REDIS_URL`` to measure on another Redis instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARQ_PYTHON = ROOT / ".venv-arq" / "bin" / "python"


@contextmanager
def own_redis() -> Iterator[str]:
    """A private redis-server on a free port (no persistence), its URL while it runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "singles")
    parser.add_argument("--systems", default="ours,ours-batch,dramatiq,celery,arq")
    parser.add_argument("--latency", choices=("ours", "all", "none"), default="ours")
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs per system")
    args = parser.parse_args(argv)
    if "LIMECHAT_BENCH_REDIS_URL" in os.environ:
        return _run(args)
    with own_redis() as url:
        os.environ["LIMECHAT_BENCH_REDIS_URL"] = url
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    # (imported here: bench.common reads LIMECHAT_BENCH_REDIS_URL when it is imported)
    from bench import baselines

    args.out.mkdir(parents=True, exist_ok=True)
    systems = [s for s in args.systems.split(",") if s]
    if "arq" in systems and not ARQ_PYTHON.exists():
        print("arq skipped: `make bench-arq` first (arq needs a virtualenv of its own)")
        systems.remove("arq")
    results = baselines.run_all(systems, args.events, args.out, args.repeat, args.latency)
    print()
    print(baselines.table(results))
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "table.md").write_text(baselines.table(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
