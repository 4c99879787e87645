"""A fast keep-alive HTTP/1.1 receiver for the benchmarks, counting what arrives.

    python -m bench.receiver [--port 0]      prints "listening on http://127.0.0.1:PORT/..."

The sandbox (``worker.sandbox.Sandbox``, a ``ThreadingHTTPServer``) spends most of a CPU core
on a thread per connection and Python's ``http.server`` parsing, and tops out at a few hundred
requests a second on a 2-core machine while the systems it measures share those cores. This
receiver is one asyncio ``Protocol`` on one thread: it parses just enough HTTP/1.1 (request
line, ``Content-Length``, ``Connection: close``), answers ``200 {"status": "success"}`` on
the same connection, and records the wall-clock time of every arrival. It checks nothing about
the body (the sandbox and the integration tests do that).

What it records, read and changed through control paths (not counted as arrivals):

    GET  /_stats          {"ok", "failed", "first_ok", "last_ok", "connections"}
    GET  /_ok_times       arrival times (``time.time()``) of the requests answered 2xx
    GET  /_fail_times     arrival times of those answered otherwise
    GET  /_latencies      arrival time minus the ``"bench_t"`` found in each 2xx body
    POST /_reset          forget everything recorded
    POST /_mode?status=503&delay=0.1   answer this status, after this many seconds

A request body that contains ``"bench_t": <epoch seconds>`` (the benchmarks put it in the
event's ``data`` when they enqueue it) gives one latency sample: enqueue to arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

PATH = "/api/v1/cvf-events"
_REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 503: "Service Unavailable"}
_BENCH_T = b'"bench_t": '


class State:
    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.connections = 0
        self.reset()

    def reset(self) -> None:
        self.ok_times: list[float] = []
        self.fail_times: list[float] = []
        self.latencies: list[float] = []

    def stats(self) -> dict[str, Any]:
        return {
            "ok": len(self.ok_times),
            "failed": len(self.fail_times),
            "first_ok": self.ok_times[0] if self.ok_times else None,
            "last_ok": self.ok_times[-1] if self.ok_times else None,
            "connections": self.connections,
            "status": self.status,
            "delay": self.delay,
        }


def _response(status: int, payload: bytes, close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return head.encode("ascii") + b"\r\n" + payload


_SUCCESS = b'{"status": "success"}'


class HttpProtocol(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.state.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            method, _, rest = lines[0].partition(" ")
            target = rest.rsplit(" ", 1)[0]
            self.handle(method, target, body, close)

    def handle(self, method: str, target: str, body: bytes, close: bool) -> None:
        now = time.time()
        assert self.transport is not None
        if target.startswith("/_"):
            self.transport.write(_response(200, self.control(method, target), close))
        elif target.split("?", 1)[0] != PATH or method != "POST":
            self.transport.write(_response(404, b'{"error": "no such endpoint"}', close))
        else:
            state = self.state
            if state.status < 300:
                state.ok_times.append(now)
                at = body.find(_BENCH_T)
                if at >= 0:
                    start = at + len(_BENCH_T)
                    stop = start
                    while stop < len(body) and body[stop] in b"0123456789.e-+":
                        stop += 1
                    with contextlib.suppress(ValueError):
                        state.latencies.append(now - float(body[start:stop]))
                reply = _response(state.status, _SUCCESS, close)
            else:
                state.fail_times.append(now)
                reply = _response(state.status, b'{"error": "outage"}', close)
            if state.delay > 0:
                asyncio.get_running_loop().call_later(state.delay, self._send, reply, close)
                return
            self.transport.write(reply)
        if close:
            self.transport.close()

    def _send(self, reply: bytes, close: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)
            if close:
                self.transport.close()

    def control(self, method: str, target: str) -> bytes:
        parts = urlsplit(target)
        state = self.state
        if parts.path == "/_stats":
            return json.dumps(state.stats()).encode()
        if parts.path == "/_ok_times":
            return json.dumps(state.ok_times).encode()
        if parts.path == "/_fail_times":
            return json.dumps(state.fail_times).encode()
        if parts.path == "/_latencies":
            return json.dumps(state.latencies).encode()
        if parts.path == "/_reset" and method == "POST":
            state.reset()
            return b"{}"
        if parts.path == "/_mode" and method == "POST":
            query = parse_qs(parts.query)
            if "status" in query:
                state.status = int(query["status"][0])
            if "delay" in query:
                state.delay = float(query["delay"][0])
            return json.dumps(state.stats()).encode()
        return b'{"error": "unknown control path"}'

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    state = State()
    server = await loop.create_server(lambda: HttpProtocol(state), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound}{PATH}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:  # the benchmark died without stopping us: stop too
        while os.getppid() == parent:
            await asyncio.sleep(1)
        stop.set()

    watch = asyncio.create_task(orphaned())
    async with server:
        await stop.wait()
    watch.cancel()


class Receiver:
    """The receiver in a subprocess of its own (so it does not share our GIL), and its controls."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver"],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].strip()
        self.base = self.url[: -len(PATH)]
        self._http = requests.Session()
        self._http.trust_env = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _get(self, path: str) -> Any:
        response = self._http.get(self.base + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/_stats")
        return result

    def ok_times(self) -> list[float]:
        result: list[float] = self._get("/_ok_times")
        return result

    def fail_times(self) -> list[float]:
        result: list[float] = self._get("/_fail_times")
        return result

    def latencies(self) -> list[float]:
        result: list[float] = self._get("/_latencies")
        return result

    def reset(self) -> None:
        self._http.post(self.base + "/_reset", timeout=30).raise_for_status()

    def mode(self, status: int = 200, delay: float = 0.0) -> None:
        self._http.post(
            f"{self.base}/_mode?status={status}&delay={delay}", timeout=30
        ).raise_for_status()

    def stop(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
