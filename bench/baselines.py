"""The systems issue 12 compares, each behind the same small interface, and its measurements.

Ours (``limechat-events worker``, one event per ``send_event``, and ``send_events`` batches),
the naive Dramatiq actor (bench/naive_dramatiq.py), the naive Celery task with Celery's
default prefork pool (bench/naive.py) and the naive arq job (bench/naive_arq.py, in its own
virtualenv). See bench/singles.py for what is measured.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import BENCH_REDIS_URL, ROOT, Service, Services, group_cpu, machine
from bench.receiver import Receiver
from bench.run import (
    CONCURRENCY,
    body,
    item,
    naive_env,
    naive_worker,
    ours_env,
    ours_workers,
    percentile,
    throughput,
)
from producer import Producer, ProducerSettings
from tests.helpers import TEST_ACCOUNT, TEST_TOKEN
from worker.cpus import available_cpus

ARQ_PYTHON = ROOT / ".venv-arq" / "bin" / "python"
PHONE = "+915673412780"
DAY = 86_400.0
EVENTS_PER_DAY = 1_000_000
#: The harness's own commands, not counted.
_NOT_COUNTED = {"info", "config", "flushdb", "flushall", "scan", "memory", "dbsize", "ping"}


class System:
    """A worker to start, pause and resume, and a way to fill its queue."""

    name = ""
    label = ""

    def service(self, receiver: Receiver, out: Path) -> Service | Services:
        raise NotImplementedError

    ready = ""

    def fill(self, count: int) -> None:
        """``count`` events on the queue (the worker is paused meanwhile)."""
        for i in range(count):
            self.send_one(i)

    def send_one(self, i: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Ours(System):
    name = "ours"

    def __init__(self, batch: bool = False) -> None:
        self.batch = batch
        self.name = "ours-batch" if batch else "ours"
        self.producer = Producer(ProducerSettings(redis_url=BENCH_REDIS_URL))
        processes = available_cpus()
        self.processes = processes
        kind = "send_events batches" if batch else "send_event"
        self.label = f"ours, {kind} (`limechat-events worker`, {processes} x {CONCURRENCY} threads)"
        self.ready = "worker ready"

    def service(self, receiver: Receiver, out: Path) -> Service | Services:
        return ours_workers(self.name, ours_env(receiver), out, self.processes)

    def fill(self, count: int) -> None:
        if self.batch:
            self.producer.send_events([item(i) for i in range(count)])
        else:
            super().fill(count)

    def send_one(self, i: int) -> None:
        self.producer.send_event("bench", phone=PHONE, data=body(i)["data"])

    def close(self) -> None:
        self.producer.close()


class Dramatiq(System):
    name = "dramatiq"

    def __init__(self) -> None:
        from bench import naive_dramatiq

        self.actor = naive_dramatiq.send_custom_event
        cpus = os.cpu_count() or 1
        self.label = f"naive Dramatiq actor (`requests.Session` per thread, {cpus} x 8 threads)"
        self.ready = "Worker process is ready for action."
        self.processes = cpus

    def service(self, receiver: Receiver, out: Path) -> Service | Services:
        argv = [sys.executable, "-m", "dramatiq", "bench.naive_dramatiq"]
        return Service(self.name, argv, naive_env(receiver), out, ready_count=self.processes)

    def send_one(self, i: int) -> None:
        self.actor.send(body(i))


class Celery(System):
    name = "celery"
    label = "naive Celery task, prefork (Celery's default pool)"
    ready = "naive worker ready"

    def __init__(self) -> None:
        from bench import naive

        self.task = naive.send_custom_event

    def service(self, receiver: Receiver, out: Path) -> Service | Services:
        return naive_worker(self.name, receiver, out)

    def send_one(self, i: int) -> None:
        self.task.delay(body(i))


class Arq(System):
    name = "arq"
    label = "naive arq job (httpx, `max_jobs=50`)"
    ready = "naive arq worker ready"

    def _env(self, receiver: Receiver | None = None) -> dict[str, str]:
        # (its own virtualenv: the credentials and this checkout passed on explicitly)
        return naive_env(
            receiver, NAIVE_TOKEN=TEST_TOKEN, NAIVE_ACCOUNT=TEST_ACCOUNT, PYTHONPATH=str(ROOT)
        )

    def service(self, receiver: Receiver, out: Path) -> Service | Services:
        argv = [str(ARQ_PYTHON), "-m", "arq", "bench.naive_arq.WorkerSettings"]
        return Service(self.name, argv, self._env(receiver), out)

    def fill(self, count: int) -> None:
        subprocess.run(
            [str(ARQ_PYTHON), "-m", "bench.naive_arq", "enqueue", str(count)],
            cwd=ROOT,
            env=self._env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )


def make(name: str) -> System:
    return {
        "ours": lambda: Ours(),
        "ours-batch": lambda: Ours(batch=True),
        "dramatiq": Dramatiq,
        "celery": Celery,
        "arq": Arq,
    }[name]()


# ------------------------------------------------------------------ measurements


def command_counts(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    counts = {}
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if name.split("|")[0] not in _NOT_COUNTED:
            counts[name] = int(value["calls"])
    return counts


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def wait_for_count(receiver: Receiver, expected: int, idle: float = 30.0) -> int:
    last, changed = -1, time.monotonic()
    while True:
        ok = int(receiver.stats()["ok"])
        if ok >= expected:
            return ok
        if ok != last:
            last, changed = ok, time.monotonic()
        elif time.monotonic() - changed > idle:
            print(f"  warning: only {ok} of {expected} arrived", flush=True)
            return ok
        time.sleep(0.02)


def throughput_run(
    system: System, service: Service | Services, receiver: Receiver, client: redis.Redis, n: int
) -> dict[str, Any]:
    """Fill while stopped, resume, deliver; throughput, commands and memory per event."""
    receiver.reset()
    time.sleep(0.5)  # (the worker settles: its last poll and sweep are in)
    memory_before = used_memory(client)
    client.config_resetstat()
    service.pause()
    try:
        t0 = time.perf_counter()
        system.fill(n)
        fill_s = time.perf_counter() - t0
        enqueue_commands = sum(command_counts(client).values())
    finally:
        client.config_resetstat()
        cpu_before = group_cpu(service)
        service.resume()
    delivered = wait_for_count(receiver, n)
    counts = command_counts(client)
    cpu = group_cpu(service) - cpu_before
    times = receiver.ok_times()
    time.sleep(1.0)
    memory_after = used_memory(client)
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:12]
    return {
        "events": n,
        "delivered": delivered,
        "per_s": throughput(times),
        "seconds": (times[-1] - times[0]) if len(times) > 1 else 0.0,
        "fill_s": fill_s,
        "commands_per_event": sum(counts.values()) / max(1, delivered),
        "enqueue_commands_per_event": enqueue_commands / n,
        "commands": dict(top),
        "memory_retained_per_event": (memory_after - memory_before) / max(1, delivered),
        "cpu_ms_per_event": cpu / max(1, delivered) * 1000,
    }


def marker_memory(client: redis.Redis) -> dict[str, Any]:
    """What our delivered markers hold in Redis now, and per delivered event over a day."""
    from producer import contract

    total, keys, ttls = 0, 0, []
    for key in client.scan_iter(match=f"{contract.PREFIX}:delivered*", count=1000):
        total += int(client.memory_usage(key, samples=0) or 0)
        keys += 1
        ttls.append(client.ttl(key))
    return {"keys": keys, "bytes": total, "max_ttl_s": max(ttls) if ttls else None}


def latency_run(system: System, receiver: Receiver, count: int, gap: float) -> dict[str, Any]:
    """``count`` events sent ``gap`` seconds apart: enqueue to arrival, p50 and p99."""
    receiver.reset()
    started = time.perf_counter()
    for i in range(count):
        system.send_one(i)
        next_at = started + (i + 1) * gap
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    wait_for_count(receiver, count)
    samples = receiver.latencies()
    return {
        "events": count,
        "rate_per_s": count / (time.perf_counter() - started),
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "max_ms": max(samples) * 1000 if samples else math.nan,
    }


def run_system(
    name: str, n: int, out: Path, repeat: int, latency: bool, receiver: Receiver
) -> dict[str, Any]:
    client = redis.Redis.from_url(BENCH_REDIS_URL)
    client.flushdb()
    system = make(name)
    service = system.service(receiver, out)
    result: dict[str, Any] = {"label": system.label, "runs": []}
    try:
        service.start(system.ready)
        time.sleep(1.0)
        for _ in range(repeat):
            run = throughput_run(system, service, receiver, client, n)
            print(
                f"  {name}: {run['per_s']:.0f}/s, {run['commands_per_event']:.2f} commands/event,"
                f" {run['memory_retained_per_event']:.0f} B/event retained",
                flush=True,
            )
            result["runs"].append(run)
        if name.startswith("ours"):
            result["markers"] = marker_memory(client)
        if latency:
            result["latency_idle"] = latency_run(system, receiver, 200, 0.02)
            result["latency_200"] = latency_run(system, receiver, 2000, 1 / 200)
            print(
                f"  {name}: latency idle p99 {result['latency_idle']['p99_ms']:.1f} ms, "
                f"at 200/s p99 {result['latency_200']['p99_ms']:.1f} ms",
                flush=True,
            )
    finally:
        service.stop()
        system.close()
        client.flushdb()
        client.close()
    return result


def run_all(systems: list[str], n: int, out: Path, repeat: int, latency: str) -> dict[str, Any]:
    receiver = Receiver()
    results: dict[str, Any] = {
        "machine": machine(),
        "loadavg_before": _loadavg(),
        "events": n,
        "systems": {},
    }
    print(results["machine"], flush=True)
    try:
        for name in systems:
            print(f"{name}:", flush=True)
            wants = latency == "all" or (latency == "ours" and name in ("ours", "dramatiq"))
            results["systems"][name] = run_system(name, n, out, repeat, wants, receiver)
    finally:
        receiver.stop()
    results["loadavg_after"] = _loadavg()
    return results


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else math.nan


def table(results: dict[str, Any]) -> str:
    """The issue's table, plus memory and latency; medians when runs were repeated."""
    lines = [
        f"{results['machine']}; {results['events']:,} events per run; load average "
        f"{results['loadavg_before']} -> {results.get('loadavg_after', '?')}",
        "",
        "| system | delivered/s | Redis commands per event (enqueue) "
        "| memory retained per event | worker CPU ms per event |",
        "|---|---:|---:|---:|---:|",
    ]
    dramatiq = results["systems"].get("dramatiq")
    base = _median([r["per_s"] for r in dramatiq["runs"]]) if dramatiq else math.nan
    for name, fig in results["systems"].items():
        runs = fig["runs"]
        per_s = _median([r["per_s"] for r in runs])
        all_rates = ", ".join(f"{r['per_s']:.0f}" for r in runs)
        ratio = f" ({per_s / base:.2f}x Dramatiq)" if base == base and name != "dramatiq" else ""
        lines.append(
            f"| {fig['label']} | {per_s:,.0f}{ratio}"
            + (f" [{all_rates}]" if len(runs) > 1 else "")
            + f" | {_median([r['commands_per_event'] for r in runs]):.2f}"
            f" ({_median([r['enqueue_commands_per_event'] for r in runs]):.2f})"
            f" | {_median([r['memory_retained_per_event'] for r in runs]):.0f} B"
            f" | {_median([r['cpu_ms_per_event'] for r in runs]):.2f} |"
        )
    extra = []
    for name, fig in results["systems"].items():
        markers = fig.get("markers")
        if markers:
            delivered = sum(r["delivered"] for r in fig["runs"])
            per_event = markers["bytes"] / max(1, delivered)
            extra.append(
                f"- {name}: delivered markers hold {markers['bytes']:,} B in {markers['keys']} "
                f"key(s) for {delivered:,} events: {per_event:.1f} B per event, kept "
                f"{markers['max_ttl_s']} s at most"
            )
        for key, what in (("latency_idle", "idle"), ("latency_200", "at 200 events/s")):
            lat = fig.get(key)
            if lat:
                extra.append(
                    f"- {name}: latency send to receiver {what} ({lat['events']} events, "
                    f"{lat['rate_per_s']:.0f}/s): p50 {lat['p50_ms']:.1f} ms, "
                    f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
                )
        if fig["runs"]:
            top = ", ".join(f"{k} {v}" for k, v in fig["runs"][-1]["commands"].items())
            extra.append(f"- {name}: commands of the last run: {top}")
    return "\n".join([*lines, "", *extra])
