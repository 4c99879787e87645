"""What the benchmarks share: a private Redis database, a counting receiver, worker processes."""

from __future__ import annotations

import bisect
import contextlib
import os
import platform
import signal
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
    """The commit measured, with ``+changes`` when producer/ or worker/ differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "producer", "worker"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if changed else head


class Service:
    """A subprocess in its own process group, its output in a file, paused and resumed at will.

    Used for the worker processes the benchmarks measure: their output goes to a file rather
    than through a pipe into this process, so reading it costs the measured machine nothing.
    """

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, ready_count: int = 1
    ) -> None:
        self.name = name
        #: how many times the ready line must appear (once per process of a supervisor)
        self.ready_count = ready_count
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str, timeout: float = 60) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self.log().count(ready) < self.ready_count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """SIGSTOP the whole group: nothing consumed (or burnt) while the queue is filled."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    @property
    def pgids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def rss_kib(self) -> int:
        """Resident memory (VmRSS) of every process in the group, in KiB."""
        return sum(group_rss_kib(pgid) for pgid in self.pgids)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        # A prefork pool's children may outlive a killed parent: the group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def vm_rss_kib(pid: int) -> int:
    """VmRSS of one process from /proc/PID/status, in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def group_pids(pgids: set[int]) -> list[int]:
    """The processes now in any of these process groups (prefork children included)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:  # field 5 of stat: the process group
            pids.append(int(entry.name))
    return pids


def group_rss_kib(pgid: int) -> int:
    return sum(vm_rss_kib(pid) for pid in group_pids({pgid}))


def group_cpu(service: Service | Services) -> float:
    """CPU seconds used so far by the service's process groups (prefork children included)."""
    return sum(cpu_seconds(pid) for pid in group_pids(set(service.pgids)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Services:
    """Several services started, paused, measured and stopped as one (N worker processes)."""

    def __init__(self, services: list[Service]) -> None:
        self.services = services

    def start(self, ready: str, timeout: float = 60) -> Services:
        try:
            for service in self.services:
                service.start(ready, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pgids(self) -> list[int]:
        return [pgid for service in self.services for pgid in service.pgids]

    def pause(self) -> None:
        for service in self.services:
            service.pause()

    def resume(self) -> None:
        for service in self.services:
            service.resume()

    def rss_kib(self) -> int:
        return sum(service.rss_kib() for service in self.services)

    def stop(self, timeout: float = 20) -> None:
        for service in self.services:
            service.stop(timeout)
