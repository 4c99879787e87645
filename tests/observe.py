"""Watching the product from outside, as an operator could: what is queued, which processes
run, what Redis was asked, what Sentry was sent.

Used by the tests of the README's promises (tests/integration/test_*_promises.py and friends).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from pathlib import Path
from typing import Any, cast

import redis

from producer import contract


def queued_events(r: redis.Redis) -> list[dict[str, Any]]:
    """Every event waiting on the queue, oldest first, as a Celery worker would receive them.

    The queue holds Celery task messages (protocol 2) in kombu's Redis envelope; each carries
    ``deliver(events)``.
    """
    events: list[dict[str, Any]] = []
    for raw in reversed(r.lrange(contract.QUEUE, 0, -1)):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        events.extend(body[0][0])
    return events


def queued_messages(r: redis.Redis) -> int:
    return int(r.llen(contract.QUEUE))


def child_pids(pid: int) -> set[int]:
    """The processes ``pid`` started that are still alive (Linux ``/proc``)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return {c for c in found if _alive(c)}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def heartbeat_pids(r: redis.Redis) -> set[int]:
    """Process ids of the workers whose scheduler has reported in (``stats``: workers alive)."""
    names = cast("list[bytes]", r.zrange(contract.WORKERS, 0, -1))
    return {int(name.decode().rsplit(":", 1)[1]) for name in names}


class RedisMonitor:
    """Every command a Redis server executes while this runs (``MONITOR``), as text.

    Only for servers of a test's own: ``MONITOR`` slows a server down for everyone.
    """

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._ok = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ok.wait(5):
            raise AssertionError("MONITOR did not start")

    def _read(self) -> None:
        self._sock.settimeout(None)
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)
            if b"+OK" in chunk:
                self._ok.set()

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", errors="replace")

    def commands(self) -> list[str]:
        """One line per executed command: ``+<time> [<db> <client>] "CMD" "arg" ...``."""
        return [line for line in self.text().splitlines() if line.startswith("+") and "[" in line]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
