"""What Celery's remote control costs a worker: ``LIMECHAT_REMOTE_CONTROL`` on against off.

    python -m bench.remote_control [--events N] [--idle-seconds S] [--rounds R] [--out DIR]

Runs a Redis server of its own (``redis-server`` on a free port, no persistence), so that its
command counters are the worker's alone, and the benchmark receiver (bench/receiver.py). For
each round and each mode (off, on, and on while ``celery inspect ping`` asks every second), one
``limechat-events worker`` process of 16 threads, production defaults, rate limit off:

- idle: Redis commands per second (``INFO commandstats``, our own ``INFO`` calls taken off) and
  the worker's CPU over ``--idle-seconds`` with nothing to deliver;
- delivering: ``--events`` events, one per message (where a per-message cost would show),
  queued while the worker is stopped, then events/s at the receiver and the worker's CPU per
  event (bench/run.py's ``deliver_run``).

Modes alternate within each round so that a noisy machine weighs on all of them alike; the
table gives the median of the rounds and the ratio to "off".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import ROOT, Service, Services, git_revision, group_cpu, machine
from bench.receiver import Receiver
from bench.run import Ours, Plan, deliver_run, loadavg, ours_env
from producer import Producer, ProducerSettings
from tests.chaos.redis_server import RedisServer
from worker.celery_app import create_control_app

MODES = ("off", "on", "on, pinged every 1 s")


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


class Pinger(threading.Thread):
    """``celery inspect ping`` (the app's ``control.ping``) every second until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.app = create_control_app({"REDIS_URL": url})
        self.answers: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.answers.append(len(self.app.control.ping(timeout=0.5)))
            self._stop_event.wait(0.5)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join(10)
        return self.answers


def measure(
    mode: str, url: str, receiver: Receiver, producer: Producer, args: Any
) -> dict[str, Any]:
    env = ours_env(
        receiver,
        REDIS_URL=url,
        LIMECHAT_REMOTE_CONTROL="off" if mode == "off" else "on",
        LIMECHAT_WORKER_PROCESSES="1",
    )
    name = "remote-" + mode.split(",")[0] + ("-pinged" if "pinged" in mode else "")
    service = Services([Service(name, [sys.executable, "-m", "worker", "worker"], env, args.out)])
    client = redis.Redis.from_url(url)
    pinger = Pinger(url) if "pinged" in mode else None
    service.start("worker ready")
    try:
        time.sleep(2.0)  # (start-up commands done)
        if pinger is not None:
            pinger.start()
            time.sleep(1.0)
        before, cpu_before, t0 = command_counts(client), group_cpu(service), time.monotonic()
        time.sleep(args.idle_seconds)
        after, cpu_after, t1 = command_counts(client), group_cpu(service), time.monotonic()
        seconds = t1 - t0
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta["info"] = delta.get("info", 0) - 1  # (the second INFO of ours)
        delta = {k: v for k, v in delta.items() if v > 0}
        plan = Plan.full()
        figures = deliver_run(Ours(producer), service, receiver, args.events, plan)
        answers = pinger.stop() if pinger is not None else []
    finally:
        if pinger is not None:
            pinger.stop()
        service.stop()
        client.flushdb()
        client.close()
    return {
        "mode": mode,
        "idle_commands_per_s": sum(delta.values()) / seconds,
        "idle_commands": {k: round(v / seconds, 2) for k, v in sorted(delta.items())},
        "idle_cpu_percent": (cpu_after - cpu_before) / seconds * 100,
        "per_s": figures["per_s"],
        "cpu_ms_per_event": figures["cpu_ms_per_event"],
        "delivered": figures["delivered"],
        "pings_answered": f"{sum(1 for a in answers if a)}/{len(answers)}" if pinger else "",
    }


def table(runs: list[dict[str, Any]]) -> str:
    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["mode"] == mode)

    rows = [
        ("idle: Redis commands/s", "idle_commands_per_s", "{:.2f}"),
        ("idle: worker CPU (% of a core)", "idle_cpu_percent", "{:.2f}"),
        ("deliver, 1 event/message: events/s", "per_s", "{:.0f}"),
        ("deliver: worker CPU per event (ms)", "cpu_ms_per_event", "{:.3f}"),
    ]
    lines = ["| measure | " + " | ".join(MODES) + " | on / off |", "|---|---:|---:|---:|---:|"]
    for label, key, fmt in rows:
        values = [median(mode, key) for mode in MODES]
        ratio = values[1] / values[0] if values[0] else float("nan")
        cells = " | ".join(fmt.format(v) for v in values)
        lines.append(f"| {label} | {cells} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = loadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        receiver = Receiver()
        producer = Producer(ProducerSettings(redis_url=server.url))
        try:
            for round_ in range(args.rounds):
                for mode in MODES:
                    run = measure(mode, server.url, receiver, producer, args)
                    run["round"] = round_ + 1
                    runs.append(run)
                    print(json.dumps(run), flush=True)
        finally:
            producer.close()
            receiver.stop()
            server.close()
    print()
    print(f"{started}, revision {git_revision()}, {machine()}")
    print(f"load average {load_before} before, {loadavg()} after; {args.rounds} round(s)")
    print(f"{args.events} events per delivery run, {args.idle_seconds:g} s idle\n")
    print(table(runs))
    (args.out / "remote_control.json").write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
