"""Test helpers: waiting for conditions, worker subprocesses, scripted receivers."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from worker.sandbox import Reply, Request, Sandbox

ROOT = Path(__file__).resolve().parent.parent

TEST_TOKEN = "test-token-5e3f9c1d-never-log-me"
TEST_ACCOUNT = "acct-123"


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``limechat-events ARGS`` in a subprocess with ``env``; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def worker_env(redis_url: str, api_url: str, **overrides: str) -> dict[str, str]:
    """The environment a test worker runs with: short timings, set as a user would set them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMECHAT_", "SENTRY_"))}
    env.update(
        REDIS_URL=redis_url,
        LIMECHAT_ACCESS_TOKEN=TEST_TOKEN,
        LIMECHAT_ACCOUNT_ID=TEST_ACCOUNT,
        LIMECHAT_API_URL=api_url,
        LIMECHAT_MAX_ATTEMPTS="4",
        LIMECHAT_RETRY_BASE_SECONDS="0.05",
        LIMECHAT_RETRY_MAX_SECONDS="0.3",
        LIMECHAT_TIMEOUT_SECONDS="2",
        LIMECHAT_VISIBILITY_TIMEOUT="4",
        LIMECHAT_SCHEDULER_INTERVAL_SECONDS="0.1",
        LIMECHAT_WORKER_CONCURRENCY="4",
        LIMECHAT_WORKER_PROCESSES="1",
        LIMECHAT_RATE_LIMIT="off",
        LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class WorkerProcess:
    """A real ``limechat-events worker`` in its own process group, its output captured."""

    def __init__(self, env: dict[str, str], argv: list[str] | None = None) -> None:
        self.env = env
        #: what follows ``python``: the worker, or a fault-injecting wrapper around it
        self.argv = argv or ["-m", "worker", "worker"]
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, wait_ready: bool = True) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_ready:
            try:
                wait_for(
                    lambda: self.saw("worker ready") or self.proc.poll() is not None,
                    30,
                    "the worker to start",
                )
            except AssertionError:
                self.kill()  # never leave a half-started worker consuming behind us
                raise
            if self.proc.poll() is not None:
                self._close()
                raise AssertionError("worker exited at start:\n" + self.text())
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.output))

    def text(self) -> str:
        return "".join(self.output)

    def kill(self) -> None:
        """SIGKILL the whole process group: no chance to acknowledge or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def wait_exit(self, timeout: float) -> int:
        """Its exit code, waiting at most ``timeout`` (then it is killed, and the wait fails)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def signal_stop(self) -> None:
        """SIGTERM to the process group, without waiting for it (see :func:`stop_all`)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.terminate(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def _close(self) -> None:
        assert self.proc is not None
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def stop_all(processes: Iterable[WorkerProcess]) -> None:
    """:meth:`WorkerProcess.stop` for several processes, their warm shutdowns side by side:
    SIGTERM to every one first, then each waited for (and killed if it does not exit)."""
    processes = list(processes)
    for process in processes:
        process.signal_stop()
    for process in processes:
        if process.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(15)
        process.stop()


@contextmanager
def running_worker(env: dict[str, str]) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(env).start()
    try:
        yield worker
    finally:
        worker.stop()


class SentryIngest:
    """A local HTTP server standing in for Sentry's ingest: keeps every envelope sentry-sdk POSTs.

    Point ``SENTRY_DSN`` at :attr:`dsn` (``http://publickey@127.0.0.1:PORT/1``).
    """

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                with outer._lock:
                    outer.bodies.append(raw)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def text(self) -> str:
        with self._lock:
            return b"\n".join(self.bodies).decode("utf-8", errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The error/message events received (not sessions, client reports or other items)."""
        from sentry_sdk.envelope import Envelope

        with self._lock:
            bodies = list(self.bodies)
        return [
            item.payload.json
            for body in bodies
            for item in Envelope.deserialize(body).items
            if item.type == "event" and item.payload.json is not None
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tcp_ports_of(pid: int) -> set[int]:
    """Local ports of the TCP sockets process ``pid`` holds open (Linux: /proc).

    A receiver that notes each request's client port can then tell which process sent it:
    the worker's HTTP connections stay open (keep-alive) while it runs.
    """
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class PortNotingSandbox(Sandbox):
    """The sandbox, also noting the client's TCP port of every request it answers 2xx."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.ports: list[int] = []
        local = threading.local()
        self._local = local
        base: Any = self._server.RequestHandlerClass

        class Handler(base):  # type: ignore[misc]
            def setup(self) -> None:
                super().setup()
                local.port = self.client_address[1]

        self._server.RequestHandlerClass = Handler

    def handle(self, method: str, request: Request) -> Reply:
        reply = super().handle(method, request)
        if 200 <= reply.status < 300:
            with self._lock:
                self.ports.append(self._local.port)
        return reply

    def accepted_by_process(self, pids: list[int]) -> dict[int, int]:
        """pid -> requests accepted from it, for processes that still hold their connection."""
        with self._lock:
            ports = list(self.ports)
        owners = {port: pid for pid in pids for port in tcp_ports_of(pid)}
        counts = dict.fromkeys(pids, 0)
        for port in ports:
            if port in owners:
                counts[owners[port]] += 1
        return counts
