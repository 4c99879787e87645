"""What the benchmarks share: a private Redis database, a counting receiver, worker processes."""

from __future__ import annotations

import bisect
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.helpers import WorkerProcess, worker_env
from worker.sandbox import Request, Sandbox

ROOT = Path(__file__).resolve().parent.parent
BENCH_REDIS_URL = os.environ.get("LIMECHAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def fresh_redis() -> redis.Redis:
    client = redis.Redis.from_url(BENCH_REDIS_URL)
    client.flushdb()
    return client


class CountingReceiver:
    """The sandbox, recording when each request arrived."""

    def __init__(self, delay: float = 0.0) -> None:
        self.arrivals: list[float] = []
        self.delay = delay
        self.sandbox = Sandbox(responder=self._respond).start()

    def _respond(self, request: Request) -> None:
        if self.delay:
            time.sleep(self.delay)
        self.arrivals.append(time.monotonic())

    @property
    def url(self) -> str:
        return self.sandbox.url

    def stop(self) -> None:
        self.sandbox.stop()


def start_workers(count: int, api_url: str, **env: str) -> list[WorkerProcess]:
    settings = worker_env(BENCH_REDIS_URL, api_url, LOG_LEVEL="INFO")
    settings.update(env)
    workers: list[WorkerProcess] = []
    try:
        for _ in range(count):
            workers.append(WorkerProcess(settings).start())
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


def max_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    if not times:
        return 0
    return max(bisect.bisect_left(times, t + width) - i for i, t in enumerate(times))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = redis.Redis.from_url(BENCH_REDIS_URL).info("server")["redis_version"]
    return (
        f"{platform.node()}: {os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}, "
        f"Redis {redis_version}, {platform.system()} {platform.release()}"
    )


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
