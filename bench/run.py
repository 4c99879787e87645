"""Issue 6's benchmark: our worker against the naive Celery task and a plain requests loop (and,
for issue 12, the naive Dramatiq actor and arq job: bench/baselines.py).

    python -m bench.run [--quick] [--out DIR] [--events N] [--outage-seconds S] [--rate R]

Starts everything it needs (a fast local keep-alive receiver, our worker, the naive task's
worker with the threads pool and with the default prefork pool, the plain loop), runs every
scenario for each against the same receiver, and prints one table: scenario, ours, naive
(best pool, and each pool), plain loop, the ratios and the issue's target. It writes the
table (``table.md``), the raw figures (``results.json``), the charts (``throughput.png``,
``rss.png``; matplotlib, from the ``bench`` extra) and the workers' logs to ``--out``.

Throughput is events answered 2xx per second at the receiver, from the first arrival to the
last. Queues are filled while the worker under test is stopped (SIGSTOP), so filling them takes
no CPU from it, and the clock starts at the first arrival after it resumes.

``--quick`` is a smoke run (a few hundred events, a 5-second outage) that finishes well within
a minute; CI runs it so the harness cannot rot. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_REDIS_URL,
    ROOT,
    Service,
    Services,
    fresh_redis,
    git_revision,
    group_cpu,
    machine,
)
from bench.receiver import Receiver
from producer import Producer, ProducerSettings, contract
from tests.helpers import worker_env
from worker.cpus import available_cpus

PHONE = "+915673412780"
CONCURRENCY = 16  # our worker's default, and the naive threads pool's
PREFORK = 2  # Celery's default prefork concurrency: one process per core (2 cores in CI)
SLOW_SECONDS = 0.1
#: The naive worker's options for Celery's threads pool, as many threads as ours.
THREADS_POOL = ["--pool=threads", f"--concurrency={CONCURRENCY}"]

# The rows of the table, in order (the smoke test checks that each is printed).
S_ENQUEUE = "enqueue: send_event vs .delay()"
S_ENQUEUE_LATENCY = "enqueue: p50 / p99 per call"
S_ENQUEUE_MANY = "enqueue: send_events of"
S_SINGLE = "deliver: 1 event per message"
S_SINGLE_OTHERS = "deliver: 1 event per message vs Dramatiq, arq"
S_BATCH = "deliver: batch messages"
S_CPU = "deliver: worker CPU per event"
S_SLOW = "deliver: receiver answers in 100 ms"
S_RSS = "outage: worker RSS"
S_DRAIN = "outage: delivered after the receiver returns"
S_LATENCY = "latency: enqueue to delivered, idle"
SCENARIOS = (
    S_ENQUEUE,
    S_ENQUEUE_LATENCY,
    S_ENQUEUE_MANY,
    S_SINGLE,
    S_SINGLE_OTHERS,
    S_BATCH,
    S_CPU,
    f"{S_SLOW}, 1 event/message",
    f"{S_SLOW}, batches",
    S_RSS,
    S_DRAIN,
    f"{S_LATENCY}, p50",
    f"{S_LATENCY}, p99",
)


@dataclass
class Plan:
    """How big each scenario is."""

    events: int  # events per throughput run
    enqueue_events: int  # send_event / .delay() calls timed one by one
    batch_events: int  # events in the one send_events() call timed
    slow_seconds: float  # how long each slow-receiver run should take
    latency_events: int
    latency_gap: float
    outage_events: int
    outage_seconds: float
    outage_rate: float  # our worker's LIMECHAT_RATE_LIMIT (per second) in the outage scenario
    idle_timeout: float  # give up waiting when nothing arrives for this long
    ours_processes: int = field(default_factory=available_cpus)  # LIMECHAT_WORKER_PROCESSES

    @classmethod
    def quick(cls) -> Plan:
        return cls(300, 300, 300, 0.5, 20, 0.02, 200, 2.0, 200.0, 10.0)

    @classmethod
    def full(cls) -> Plan:
        return cls(10_000, 10_000, 10_000, 10.0, 200, 0.05, 20_000, 120.0, 400.0, 30.0)


@dataclass
class Results:
    machine: str = ""
    revision: str = ""
    started: str = ""
    plan: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    loadavg_before: str = ""
    loadavg_after: str = ""


# ------------------------------------------------------------------ helpers


def body(i: int) -> dict[str, Any]:
    """A LimeChat request body as the naive task posts it; ``bench_t`` is when it was sent."""
    return {
        "distinct_id": PHONE[1:],
        "phone": PHONE,
        "event": "bench",
        "data": {"i": i, "order_id": f"order-{i}", "currency": "INR", "bench_t": time.time()},
    }


def item(i: int) -> dict[str, Any]:
    return body(i)


def throughput(times: list[float]) -> float:
    """Arrivals per second from the first to the last arrival."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def wait_delivered(receiver: Receiver, expected: int, idle_timeout: float) -> dict[str, Any]:
    """Wait until ``expected`` events were answered 2xx, or nothing new came for a while."""
    last_count, last_change = -1, time.monotonic()
    while True:
        stats = receiver.stats()
        if stats["ok"] >= expected:
            return stats
        if stats["ok"] + stats["failed"] != last_count:
            last_count, last_change = stats["ok"] + stats["failed"], time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            print(
                f"  warning: only {stats['ok']} of {expected} arrived (nothing new for "
                f"{idle_timeout:g}s)",
                flush=True,
            )
            return stats
        time.sleep(0.1)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class Sampler(threading.Thread):
    """Every ``interval`` seconds: the service's RSS and whatever ``extra`` returns."""

    def __init__(
        self,
        service: Service | Services,
        extra: Callable[[], dict[str, float]],
        interval: float = 1.0,
    ) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.extra = extra
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self._stop_event = threading.Event()
        self.started_at = time.time()

    def run(self) -> None:
        while not self._stop_event.is_set():
            sample = {"t": time.time() - self.started_at, "rss_mib": self.service.rss_kib() / 1024}
            # A sample missed is not worth failing the run for.
            with contextlib.suppress(Exception):
                sample.update(self.extra())
            self.samples.append(sample)
            self._stop_event.wait(self.interval)

    def stop(self) -> list[dict[str, float]]:
        self._stop_event.set()
        self.join(5)
        return self.samples


@contextmanager
def running(service: Service | Services, ready: str) -> Iterator[Service | Services]:
    service.start(ready)
    try:
        yield service
    finally:
        service.stop()


def ours_env(receiver: Receiver, **overrides: str) -> dict[str, str]:
    """Production defaults except where the scenario says otherwise (and rate limit off)."""
    settings = {
        "LOG_LEVEL": "INFO",
        "LIMECHAT_RATE_LIMIT": "off",
        "LIMECHAT_WORKER_CONCURRENCY": str(CONCURRENCY),
        "LIMECHAT_MAX_ATTEMPTS": "12",
        "LIMECHAT_RETRY_BASE_SECONDS": "2",
        "LIMECHAT_RETRY_MAX_SECONDS": "600",
        "LIMECHAT_TIMEOUT_SECONDS": "10",
        "LIMECHAT_VISIBILITY_TIMEOUT": "300",
        "LIMECHAT_SCHEDULER_INTERVAL_SECONDS": "0.25",
    }
    settings.update(overrides)
    return worker_env(BENCH_REDIS_URL, receiver.url, **settings)


def ours_workers(name: str, env: dict[str, str], out: Path, processes: int) -> Services:
    """One ``limechat-events worker`` running ``processes`` processes (its default: one per CPU)."""
    argv = [sys.executable, "-m", "worker", "worker"]
    env = {**env, "LIMECHAT_WORKER_PROCESSES": str(processes)}
    return Services([Service(name, argv, env, out, ready_count=processes)])


def naive_env(receiver: Receiver | None, **extra: str) -> dict[str, str]:
    """A naive baseline's environment: none of ours, the bench's Redis, the receiver if any."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMECHAT_", "SENTRY_"))}
    env.update(LIMECHAT_BENCH_REDIS_URL=BENCH_REDIS_URL, PYTHONUNBUFFERED="1", **extra)
    if receiver is not None:
        env["NAIVE_RECEIVER_URL"] = receiver.url
    return env


def naive_worker(name: str, receiver: Receiver, out: Path, *options: str) -> Service:
    """The naive Celery task's worker (bench/naive.py), with Celery's ``options``."""
    argv = [sys.executable, "-m", "bench.naive", "worker", *options]
    return Service(name, argv, naive_env(receiver), out)


# ------------------------------------------------------------------ the systems under test


class Ours:
    name = "ours"

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def enqueue_one(self, i: int) -> None:
        b = body(i)
        self.producer.send_event("bench", phone=PHONE, data=b["data"])

    def enqueue_many(self, items: list[dict[str, Any]]) -> None:
        self.producer.send_events(items)


class Naive:
    def __init__(self, pool: str) -> None:
        from bench import naive

        self.name = f"naive-{pool}"
        self.task = naive.send_custom_event

    def enqueue_one(self, i: int) -> None:
        self.task.delay(body(i))

    def enqueue_many(self, items: list[dict[str, Any]]) -> None:
        for b in items:
            self.task.delay(b)


def timed_enqueue(system: Ours | Naive, count: int) -> dict[str, float]:
    """``count`` single enqueues, each timed: calls per second and per-call percentiles."""
    durations: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        system.enqueue_one(i)
        durations.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {
        "per_s": count / elapsed,
        "p50_ms": percentile(durations, 50) * 1000,
        "p99_ms": percentile(durations, 99) * 1000,
        "max_ms": max(durations) * 1000,
    }


def deliver_run(
    system: Ours | Naive,
    service: Service | Services,
    receiver: Receiver,
    count: int,
    plan: Plan,
    *,
    batch: bool = False,
    timed: bool = False,
) -> dict[str, float]:
    """Fill the queue with ``count`` events while the worker is stopped, then let it deliver."""
    receiver.reset()
    service.pause()
    figures: dict[str, float] = {}
    try:
        if batch:
            items = [item(i) for i in range(count)]
            t0 = time.perf_counter()
            system.enqueue_many(items)
            figures["enqueue_many_s"] = time.perf_counter() - t0
        elif timed:
            figures.update({f"enqueue_{k}": v for k, v in timed_enqueue(system, count).items()})
        else:
            for i in range(count):
                system.enqueue_one(i)
    finally:
        cpu_before = group_cpu(service)
        service.resume()
    stats = wait_delivered(receiver, count, plan.idle_timeout)
    cpu = group_cpu(service) - cpu_before
    times = receiver.ok_times()
    figures.update(
        {
            "delivered": stats["ok"],
            "failed": stats["failed"],
            "per_s": throughput(times),
            "seconds": (times[-1] - times[0]) if len(times) > 1 else 0.0,
            "cpu_ms_per_event": cpu / max(1, stats["ok"]) * 1000,
        }
    )
    return figures


def latency_run(
    system: Ours | Naive, receiver: Receiver, plan: Plan
) -> dict[str, float | list[float]]:
    """One event at a time on an idle system: enqueue to arrival at the receiver."""
    receiver.reset()
    for i in range(plan.latency_events):
        system.enqueue_one(i)
        time.sleep(plan.latency_gap)
    wait_delivered(receiver, plan.latency_events, plan.idle_timeout)
    samples = receiver.latencies()
    return {
        "p50_ms": percentile(samples, 50) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "samples": len(samples),
        "ms": [round(s * 1000, 2) for s in samples],
    }


def plain_loop(receiver: Receiver, count: int, pause: float = 0.0) -> dict[str, float]:
    import subprocess

    receiver.reset()
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "bench.plainloop", receiver.url, str(count), str(pause)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    times = receiver.ok_times()
    latencies = receiver.latencies()
    return {
        "delivered": len(times),
        "per_s": throughput(times),
        "wall_s": time.time() - started,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


# ------------------------------------------------------------------ the scenarios


def run_ours(receiver: Receiver, plan: Plan, out: Path, results: Results) -> None:
    fig = results.figures.setdefault("ours", {})
    producer = Producer(ProducerSettings(redis_url=BENCH_REDIS_URL))
    ours = Ours(producer)
    service = ours_workers("ours", ours_env(receiver), out, plan.ours_processes)
    try:
        with running(service, "worker ready"):
            print("ours: one event per message (send_event)", flush=True)
            fig["single"] = deliver_run(ours, service, receiver, plan.events, plan, timed=True)
            print(f"  {fig['single']['per_s']:.0f}/s", flush=True)

            print("ours: batch messages (send_events)", flush=True)
            fig["batch"] = deliver_run(ours, service, receiver, plan.batch_events, plan, batch=True)
            print(f"  {fig['batch']['per_s']:.0f}/s", flush=True)

            receiver.mode(200, SLOW_SECONDS)
            try:
                allowed = CONCURRENCY * plan.ours_processes / SLOW_SECONDS  # threads in all
                count = max(20, int(allowed * plan.slow_seconds))
                print(f"ours: receiver answering in {SLOW_SECONDS * 1000:.0f} ms", flush=True)
                fig["slow"] = deliver_run(ours, service, receiver, count, plan)
                fig["slow"]["allowed_per_s"] = allowed
                print(f"  {fig['slow']['per_s']:.0f}/s (allowed {allowed:.0f}/s)", flush=True)
                print("ours: receiver answering in 100 ms, batch messages", flush=True)
                fig["slow_batch"] = deliver_run(ours, service, receiver, count, plan, batch=True)
                fig["slow_batch"]["allowed_per_s"] = allowed
                print(f"  {fig['slow_batch']['per_s']:.0f}/s", flush=True)
            finally:
                receiver.mode(200, 0.0)

            print("ours: latency, one event at a time", flush=True)
            fig["latency"] = latency_run(ours, receiver, plan)
    finally:
        producer.close()


def run_naive(pool: str, receiver: Receiver, plan: Plan, out: Path, results: Results) -> None:
    fig = results.figures.setdefault(f"naive-{pool}", {})
    naive = Naive(pool)
    options = THREADS_POOL if pool == "threads" else []
    service = naive_worker(f"naive-{pool}", receiver, out, *options)
    concurrency = CONCURRENCY if pool == "threads" else (os.cpu_count() or PREFORK)
    with running(service, "naive worker ready"):
        print(f"naive ({pool}): one event per task, .delay()", flush=True)
        fig["single"] = deliver_run(naive, service, receiver, plan.events, plan, timed=True)
        print(f"  {fig['single']['per_s']:.0f}/s", flush=True)

        if pool == "threads":
            # The naive way to send many: a .delay() loop (timed for the send_events row).
            receiver.reset()
            service.pause()
            try:
                items = [item(i) for i in range(plan.batch_events)]
                t0 = time.perf_counter()
                naive.enqueue_many(items)
                fig["enqueue_loop_s"] = time.perf_counter() - t0
            finally:
                service.resume()
            wait_delivered(receiver, plan.batch_events, plan.idle_timeout)

        receiver.mode(200, SLOW_SECONDS)
        try:
            allowed = concurrency / SLOW_SECONDS
            count = max(20, int(allowed * plan.slow_seconds))
            print(f"naive ({pool}): receiver answering in 100 ms", flush=True)
            fig["slow"] = deliver_run(naive, service, receiver, count, plan)
            fig["slow"]["allowed_per_s"] = allowed
            print(f"  {fig['slow']['per_s']:.0f}/s (allowed {allowed:.0f}/s)", flush=True)
        finally:
            receiver.mode(200, 0.0)

        print(f"naive ({pool}): latency, one event at a time", flush=True)
        fig["latency"] = latency_run(naive, receiver, plan)


def run_others(name: str, receiver: Receiver, plan: Plan, out: Path, results: Results) -> None:
    """The naive Dramatiq actor or arq job (bench/baselines.py): one event per message."""
    from bench import baselines

    if name == "arq" and not baselines.ARQ_PYTHON.exists():
        print("arq skipped: `make bench-arq` first (arq needs a virtualenv of its own)")
        return
    client = fresh_redis()
    system = baselines.make(name)
    service = system.service(receiver, out)
    fig = results.figures.setdefault(name, {})
    try:
        with running(service, system.ready):
            print(f"{name}: one event per message", flush=True)
            fig["single"] = baselines.throughput_run(system, service, receiver, client, plan.events)
            print(f"  {fig['single']['per_s']:.0f}/s", flush=True)
            if name == "dramatiq":  # (arq's enqueue runs in its own virtualenv: no latency)
                fig["latency"] = baselines.latency_run(
                    system, receiver, plan.latency_events, plan.latency_gap
                )
    finally:
        system.close()
        client.close()


def run_plain(receiver: Receiver, plan: Plan, results: Results) -> None:
    fig = results.figures.setdefault("plain", {})
    print("plain loop: requests.Session.post, no queue", flush=True)
    fig["single"] = plain_loop(receiver, plan.events)
    print(f"  {fig['single']['per_s']:.0f}/s", flush=True)
    receiver.mode(200, SLOW_SECONDS)
    try:
        fig["slow"] = plain_loop(receiver, max(10, int(plan.slow_seconds / SLOW_SECONDS)))
        fig["slow"]["allowed_per_s"] = 1 / SLOW_SECONDS
    finally:
        receiver.mode(200, 0.0)
    fig["latency"] = plain_loop(receiver, plan.latency_events, plan.latency_gap)


def outage(
    system: Ours | Naive,
    service: Service | Services,
    receiver: Receiver,
    plan: Plan,
    backlog: Callable[[], dict[str, float]],
    drain_idle: float,
) -> dict[str, Any]:
    """Receiver down (503) while the events are sent and retried, then up: RSS and the drain."""
    receiver.reset()
    receiver.mode(503)
    sampler = Sampler(service, backlog)
    sampler.start()
    try:
        system.enqueue_many([item(i) for i in range(plan.outage_events)])
        enqueued_at = time.time() - sampler.started_at
        time.sleep(max(0.0, plan.outage_seconds - enqueued_at))
        stats_down = receiver.stats()
        rss_down = [s["rss_mib"] for s in sampler.samples]
        receiver.mode(200)
        up_at = time.time()
        stats = wait_delivered(receiver, plan.outage_events, drain_idle)
        time.sleep(0.5)
    finally:
        receiver.mode(200)
        samples = sampler.stop()
    ok_times = [t for t in receiver.ok_times() if t >= up_at]
    fail_times = receiver.fail_times()
    # RSS while the events sit in retry: from 10% into the outage (the worker warmed up) on.
    warm = [s["rss_mib"] for s in samples if s["t"] >= plan.outage_seconds * 0.1]
    baseline = warm[0] if warm else (rss_down[0] if rss_down else math.nan)
    return {
        "events": plan.outage_events,
        "outage_s": plan.outage_seconds,
        "attempts_during_outage": stats_down["failed"],
        "delivered_after": stats["ok"],
        "lost": plan.outage_events - stats["ok"],
        "drain_per_s": throughput(ok_times),
        "drain_s": (ok_times[-1] - up_at) if ok_times else math.nan,
        "rss_start_mib": samples[0]["rss_mib"] if samples else math.nan,
        "rss_baseline_mib": baseline,
        "rss_peak_mib": max(warm) if warm else math.nan,
        "rss_growth": (max(warm) / baseline - 1) if warm else math.nan,
        "up_at_s": up_at - sampler.started_at,
        "samples": samples,
        "ok_times": [t - sampler.started_at for t in receiver.ok_times()],
        "fail_times": [t - sampler.started_at for t in fail_times],
    }


def run_outage_ours(receiver: Receiver, plan: Plan, out: Path, results: Results) -> None:
    producer = Producer(ProducerSettings(redis_url=BENCH_REDIS_URL))
    env = ours_env(
        receiver,
        LIMECHAT_RATE_LIMIT=f"{plan.outage_rate:g}/s",
        # Retries keep coming during the outage and none is dead-lettered: the backlog is
        # still there, parked, when the receiver comes back.
        LIMECHAT_MAX_ATTEMPTS="1000",
        LIMECHAT_RETRY_BASE_SECONDS="1",
        LIMECHAT_RETRY_MAX_SECONDS=str(max(2.0, plan.outage_seconds / 8)),
    )
    service = ours_workers("ours-outage", env, out, plan.ours_processes)
    client = fresh_redis()

    def backlog() -> dict[str, float]:
        return {
            "parked": float(client.zcard(contract.RETRY_DUE)),
            "queued": float(client.llen(contract.QUEUE)),
        }

    try:
        with running(service, "worker ready"):
            print(
                f"ours: outage, {plan.outage_events} events, {plan.outage_seconds:g}s of 503, "
                f"then drain at {plan.outage_rate:g}/s",
                flush=True,
            )
            result = outage(Ours(producer), service, receiver, plan, backlog, plan.idle_timeout)
            result["rate"] = plan.outage_rate
            print(
                f"  RSS {result['rss_baseline_mib']:.1f} -> peak {result['rss_peak_mib']:.1f} MiB"
                f" ({result['rss_growth']:+.1%}); drained {result['delivered_after']} at "
                f"{result['drain_per_s']:.0f}/s",
                flush=True,
            )
    finally:
        producer.close()
        client.close()
    results.series["ours"] = {k: result.pop(k) for k in ("samples", "ok_times", "fail_times")}
    results.figures.setdefault("ours", {})["outage"] = result


def run_outage_naive(receiver: Receiver, plan: Plan, out: Path, results: Results) -> None:
    from bench import naive

    client = fresh_redis()
    service = naive_worker("naive-outage", receiver, out, *THREADS_POOL)

    def backlog() -> dict[str, float]:
        # ETA retries the worker holds in memory are unacknowledged messages.
        return {
            "parked": float(client.hlen("unacked")),
            "queued": float(client.llen(naive.QUEUE)),
        }

    try:
        with running(service, "naive worker ready"):
            print(f"naive (threads): outage, {plan.outage_events} events", flush=True)
            # Its last retry waits at most 2**2 s (max_retries 3, full jitter): then it is over.
            result = outage(Naive("threads"), service, receiver, plan, backlog, 4.5)
            print(
                f"  RSS {result['rss_baseline_mib']:.1f} -> peak {result['rss_peak_mib']:.1f} MiB"
                f"; delivered after the outage: {result['delivered_after']}",
                flush=True,
            )
    finally:
        client.close()
    results.series["naive-threads"] = {
        k: result.pop(k) for k in ("samples", "ok_times", "fail_times")
    }
    results.figures.setdefault("naive-threads", {})["outage"] = result


# ------------------------------------------------------------------ the table


@dataclass
class Row:
    scenario: str
    ours: str
    naive_best: str
    naive_threads: str
    naive_prefork: str
    plain: str
    ratios: str
    target: str
    met: str


def _f(value: Any, fmt: str = "{:.0f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def build_rows(results: Results) -> list[Row]:
    f = results.figures
    ours, nt, np_, plain = f["ours"], f["naive-threads"], f["naive-prefork"], f["plain"]
    rows: list[Row] = []

    def best(key: str) -> tuple[float, str]:
        a, b = nt[key]["per_s"], np_[key]["per_s"]
        return (a, "threads") if a >= b else (b, "prefork")

    # Enqueue.
    o_enq = ours["single"]["enqueue_per_s"]
    n_enq = nt["single"]["enqueue_per_s"]
    rows.append(
        Row(
            S_ENQUEUE + " (calls/s)",
            _f(o_enq),
            _f(n_enq),
            "",
            "",
            "",
            f"{o_enq / n_enq:.2f}x naive",
            ">= 1x naive",
            _met(o_enq >= n_enq),
        )
    )
    o_p99 = ours["single"]["enqueue_p99_ms"]
    rows.append(
        Row(
            S_ENQUEUE_LATENCY + " (ms)",
            f"{_f(ours['single']['enqueue_p50_ms'], '{:.3f}')} / {_f(o_p99, '{:.3f}')}",
            f"{_f(nt['single']['enqueue_p50_ms'], '{:.3f}')} / "
            f"{_f(nt['single']['enqueue_p99_ms'], '{:.3f}')}",
            "",
            "",
            "",
            "",
            "p99 < 2 ms",
            _met(o_p99 < 2),
        )
    )
    n_batch = ours["batch"].get("enqueue_many_s", math.nan)
    n_loop = nt.get("enqueue_loop_s", math.nan)
    events = results.plan["batch_events"]
    rows.append(
        Row(
            f"{S_ENQUEUE_MANY} {events:,} vs .delay() loop (events/s)",
            _f(events / n_batch),
            _f(events / n_loop),
            "",
            "",
            "",
            f"{n_loop / n_batch:.1f}x naive",
            ">= 10x naive",
            _met(n_loop / n_batch >= 10),
        )
    )

    # Delivery throughput.
    nb, pool = best("single")
    p = plain["single"]["per_s"]
    o = ours["single"]["per_s"]
    rows.append(
        Row(
            S_SINGLE + " (events/s)",
            _f(o),
            f"{_f(nb)} ({pool})",
            _f(nt["single"]["per_s"]),
            _f(np_["single"]["per_s"]),
            _f(p),
            f"{o / nb:.2f}x naive, {o / p:.0%} of plain",
            ">= 1.1x naive",
            _met(o >= 1.1 * nb),
        )
    )
    dramatiq = f.get("dramatiq", {}).get("single", {}).get("per_s", math.nan)
    arq = f.get("arq", {}).get("single", {}).get("per_s", math.nan)
    rows.append(
        Row(
            S_SINGLE_OTHERS + " (events/s)",
            _f(o),
            f"Dramatiq {_f(dramatiq)}, arq {_f(arq)}",
            "",
            "",
            "",
            f"{o / dramatiq:.2f}x Dramatiq" + (f", {o / arq:.2f}x arq" if arq == arq else ""),
            ">= 1.2x Dramatiq",
            _met(o >= 1.2 * dramatiq),
        )
    )
    o = ours["batch"]["per_s"]
    rows.append(
        Row(
            S_BATCH + " (events/s)",
            _f(o),
            f"{_f(nb)} ({pool})",
            _f(nt["single"]["per_s"]),
            _f(np_["single"]["per_s"]),
            _f(p),
            f"{o / nb:.2f}x naive, {o / p:.0%} of plain",
            ">= 2x naive, >= 70% plain",
            _met(o >= 2 * nb and o >= 0.7 * p),
        )
    )
    rows.append(
        Row(
            S_CPU + " (ms)",
            f"{_f(ours['single']['cpu_ms_per_event'], '{:.2f}')} single, "
            f"{_f(ours['batch']['cpu_ms_per_event'], '{:.2f}')} batch",
            "",
            _f(nt["single"]["cpu_ms_per_event"], "{:.2f}"),
            _f(np_["single"]["cpu_ms_per_event"], "{:.2f}"),
            "",
            "",
            "",
            "",
        )
    )
    for key, label in (("slow", "1 event/message"), ("slow_batch", "batches")):
        o = ours[key]["per_s"]
        allowed = ours[key]["allowed_per_s"]
        rows.append(
            Row(
                f"{S_SLOW}, {label} (events/s)",
                f"{_f(o)} of {allowed:.0f}",
                "" if key == "slow_batch" else f"{_f(best('slow')[0])} ({best('slow')[1]})",
                ""
                if key == "slow_batch"
                else f"{_f(nt['slow']['per_s'])} of {nt['slow']['allowed_per_s']:.0f}",
                ""
                if key == "slow_batch"
                else f"{_f(np_['slow']['per_s'])} of {np_['slow']['allowed_per_s']:.0f}",
                "" if key == "slow_batch" else f"{_f(plain['slow']['per_s'], '{:.1f}')} of 10",
                f"{o / allowed:.0%} of concurrency/0.1 s",
                ">= 90%",
                _met(o >= 0.9 * allowed),
            )
        )

    # Outage.
    oo, no = ours.get("outage"), nt.get("outage")
    if oo and no:
        rows.append(
            Row(
                f"{S_RSS}, {oo['events']:,} events in retry "
                f"{oo['outage_s']:g} s (MiB, peak vs warm)",
                f"{oo['rss_baseline_mib']:.0f} -> {oo['rss_peak_mib']:.0f} "
                f"({oo['rss_growth']:+.0%})",
                f"{no['rss_baseline_mib']:.0f} -> {no['rss_peak_mib']:.0f} "
                f"({no['rss_growth']:+.0%})",
                "",
                "",
                "",
                "",
                "within 10%",
                _met(abs(oo["rss_growth"]) <= 0.10),
            )
        )
        rows.append(
            Row(
                S_DRAIN + " / drain rate (events/s)",
                f"{oo['delivered_after']:,} at {oo['drain_per_s']:.0f}/s",
                f"{no['delivered_after']:,} at {no['drain_per_s']:.0f}/s, {no['lost']:,} lost",
                "",
                "",
                "",
                f"{oo['drain_per_s'] / oo['rate']:.0%} of the {oo['rate']:g}/s limit",
                "all, at the configured rate",
                _met(oo["lost"] == 0 and oo["drain_per_s"] >= 0.9 * oo["rate"]),
            )
        )

    # Latency.
    for q in ("p50", "p99"):
        rows.append(
            Row(
                f"{S_LATENCY}, {q} (ms)",
                _f(ours["latency"][f"{q}_ms"], "{:.1f}"),
                "",
                _f(nt["latency"][f"{q}_ms"], "{:.1f}"),
                _f(np_["latency"][f"{q}_ms"], "{:.1f}"),
                _f(plain["latency"][f"{q}_ms"], "{:.1f}"),
                "",
                "reported",
                "",
            )
        )
    return rows


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


HEADERS = (
    "scenario",
    "ours",
    "naive (best)",
    "naive threads 16",
    "naive prefork 2",
    "plain loop",
    "ratio",
    "target",
    "met",
)


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---"] + ["---:"] * 5 + ["---"] * 3) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(v) for v in asdict(row).values()) + " |")
    return "\n".join(lines)


def text_table(rows: list[Row]) -> str:
    cells = [list(HEADERS)] + [[str(v) for v in asdict(r).values()] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ------------------------------------------------------------------ charts


def charts(results: Results, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("charts skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return []
    f = results.figures
    written = []

    labels = ["1 event/message", "batch messages", "receiver 100 ms"]
    systems = [
        (
            "ours",
            [f["ours"]["single"]["per_s"], f["ours"]["batch"]["per_s"], f["ours"]["slow"]["per_s"]],
        ),
        (
            "naive, threads 16",
            [f["naive-threads"]["single"]["per_s"], math.nan, f["naive-threads"]["slow"]["per_s"]],
        ),
        (
            "naive, prefork 2",
            [f["naive-prefork"]["single"]["per_s"], math.nan, f["naive-prefork"]["slow"]["per_s"]],
        ),
        (
            "plain requests loop",
            [f["plain"]["single"]["per_s"], math.nan, f["plain"]["slow"]["per_s"]],
        ),
    ]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.2
    for n, (name, values) in enumerate(systems):
        xs = [i + (n - 1.5) * width for i in range(len(labels))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=name)
        for bar, v in zip(bars, values, strict=True):
            if not math.isnan(v):
                ax.annotate(
                    f"{v:.0f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("events delivered per second (at the receiver)")
    ax.set_title("Delivery throughput, same machine, same receiver, same run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    if "ours" in results.series:
        fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
        for name, color in (("ours", "tab:blue"), ("naive-threads", "tab:orange")):
            series = results.series.get(name)
            if not series:
                continue
            samples = series["samples"]
            label = "ours" if name == "ours" else "naive, threads 16"
            ts = [s["t"] for s in samples]
            axes[0].plot(ts, [s["rss_mib"] for s in samples], label=label, color=color)
            events = f[name]["outage"]["events"]
            delivered = sorted(series["ok_times"])
            axes[1].plot(
                ts,
                [events - bisect.bisect_right(delivered, t) for t in ts],
                "--",
                label=f"{label}: not yet delivered",
                color=color,
            )
            axes[1].plot(
                ts,
                [s.get("parked", math.nan) for s in samples],
                label=f"{label}: "
                + (
                    "parked in Redis (retry schedule)"
                    if name == "ours"
                    else "held by the worker (ETA retries, unacked)"
                ),
                color=color,
            )
            for times, style, what in (
                (series["ok_times"], "-", "delivered"),
                (series["fail_times"], ":", "503 answers"),
            ):
                if times:
                    end = int(max(times)) + 1
                    counts = [0] * (end + 1)
                    for t in times:
                        counts[int(t)] += 1
                    axes[2].plot(
                        range(end + 1), counts, style, color=color, label=f"{label}: {what}"
                    )
        up = f["ours"]["outage"]["up_at_s"]
        for ax in axes:
            ax.axvline(up, color="grey", linestyle="--", linewidth=1)
        axes[0].set_ylabel("worker RSS (MiB)")
        axes[0].set_ylim(bottom=0)
        axes[0].set_title(
            f"Receiver outage ({f['ours']['outage']['outage_s']:g} s of 503, dashed line: "
            f"back up); {f['ours']['outage']['events']:,} events"
        )
        axes[1].set_ylabel("events")
        axes[2].set_ylabel("requests per second")
        axes[2].set_xlabel("seconds since the outage began")
        for ax in axes:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "rss.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run for CI (< 60 s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--events", type=int, help="events per throughput run")
    parser.add_argument("--outage-seconds", type=float)
    parser.add_argument("--outage-events", type=int)
    parser.add_argument("--rate", type=float, help="our rate limit (per second) for the drain")
    parser.add_argument(
        "--ours-processes",
        type=int,
        default=None,
        help="LIMECHAT_WORKER_PROCESSES for ours (default: the worker's, one per CPU)",
    )
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the charts from OUT/results.json"
    )
    args = parser.parse_args(argv)
    if args.replot:
        results = Results(**json.loads((args.out / "results.json").read_text()))
        for path in charts(results, args.out):
            print(f"wrote {path}")
        return 0
    plan = Plan.quick() if args.quick else Plan.full()
    if args.events:
        plan.events = plan.enqueue_events = plan.batch_events = args.events
    if args.outage_seconds:
        plan.outage_seconds = args.outage_seconds
    if args.outage_events:
        plan.outage_events = args.outage_events
    if args.rate:
        plan.outage_rate = args.rate
    if args.ours_processes:
        plan.ours_processes = args.ours_processes
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    results = Results(
        machine=machine(),
        revision=git_revision(),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        plan=asdict(plan),
        loadavg_before=loadavg(),
    )
    setup = (
        f"ours: `limechat-events worker`, {plan.ours_processes} processes of {CONCURRENCY}"
        " threads; "
        f"naive: threads pool {CONCURRENCY}, prefork pool {os.cpu_count()}"
    )
    results.plan["setup"] = setup
    print(f"machine: {results.machine}; revision {results.revision}", flush=True)
    print(setup, flush=True)
    print(f"load average before: {results.loadavg_before}", flush=True)
    started = time.monotonic()
    fresh_redis()
    receiver = Receiver()
    try:
        phases: list[Callable[[], None]] = [
            lambda: run_ours(receiver, plan, out, results),
            lambda: run_naive("threads", receiver, plan, out, results),
            lambda: run_naive("prefork", receiver, plan, out, results),
            lambda: run_others("dramatiq", receiver, plan, out, results),
            lambda: run_others("arq", receiver, plan, out, results),
            lambda: run_plain(receiver, plan, results),
            lambda: run_outage_ours(receiver, plan, out, results),
            lambda: run_outage_naive(receiver, plan, out, results),
        ]
        for phase in phases:
            phase()
            print(f"  [{time.monotonic() - started:.0f} s]", flush=True)
    finally:
        receiver.stop()
        fresh_redis()
    results.loadavg_after = loadavg()

    rows = build_rows(results)
    table = text_table(rows)
    print()
    print(f"machine: {results.machine}; revision {results.revision}")
    print(f"load average before/after: {results.loadavg_before} / {results.loadavg_after}")
    print(setup)
    print(table)
    (out / "table.md").write_text(
        f"machine: {results.machine}; revision {results.revision}; {results.started}; "
        f"load average before/after {results.loadavg_before} / {results.loadavg_after}\n\n"
        f"{setup}\n\n" + markdown_table(rows) + "\n"
    )
    (out / "results.json").write_text(json.dumps(asdict(results), indent=1, default=str))
    for path in charts(results, out):
        print(f"wrote {path}")
    print(f"done in {time.monotonic() - started:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
