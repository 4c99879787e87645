"""A LimeChat stand-in that misbehaves on cue: any status, odd bodies, resets, stalls, garbage.

It speaks just enough HTTP/1.1 (keep-alive, ``Content-Length`` bodies) on a raw socket, so it
can also do what a polite HTTP server cannot: drop a connection with a TCP reset after reading
a request, say nothing at all, or answer bytes that are not HTTP. Every request is checked
like the sandbox checks it (token, account, body shape), then a ``script`` picks the answer,
and the receiver records what it did. Events are told apart by ``data["seq"]``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from tests.helpers import TEST_ACCOUNT, TEST_TOKEN
from worker.sandbox import PATH, Request, check_request

_MAX_HEAD = 64 * 1024
_MAX_BODY = 4 * 1024 * 1024
_ONE_WRITE = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """An HTTP answer; ``body`` is sent as is (bytes) or as JSON."""

    status: int = 200
    body: bytes | dict[str, Any] = field(default_factory=lambda: {"status": "success"})
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


@dataclass(frozen=True)
class Reset:
    """Read the request, then abort the connection (``SO_LINGER`` 0: the client sees a reset)."""


@dataclass(frozen=True)
class Stall:
    """Read the request and say nothing for ``seconds`` (or until the receiver stops)."""

    seconds: float


@dataclass(frozen=True)
class Garbage:
    """Answer bytes that are not HTTP, then close."""

    data: bytes = b"\x00\x01 this is not HTTP \xff\r\n\r\n"


Action = Answer | Reset | Stall | Garbage
#: Picks what to do with a request that passed the sandbox's checks.
Script = Callable[["Received"], Action]


@dataclass
class Received:
    """One request as the receiver saw it, and what it did about it."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    #: ``"200"``, ``"503"``, ``"reset"``, ``"stall"``, ``"garbage"``...
    outcome: str = ""
    #: True once a whole HTTP answer was written to the socket.
    answered: bool = False

    @property
    def seq(self) -> Any:
        data = self.body.get("data") if isinstance(self.body, dict) else None
        return data.get("seq") if isinstance(data, dict) else None

    @property
    def delivered(self) -> bool:
        return self.answered and self.outcome.startswith("2")


def always_ok(_: Received) -> Action:
    return Answer()


class ChaosReceiver:
    """Serve on ``127.0.0.1:port`` (0 picks a free one) until :meth:`stop`."""

    def __init__(self, script: Script = always_ok, port: int = 0, latency: float = 0.0) -> None:
        self.script = script
        #: Seconds every request waits before its answer (to keep deliveries in flight).
        self.latency = latency
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._in_progress = 0
        self._conns: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="chaos-accept", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    # --- what happened ---------------------------------------------------------------
    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def deliveries(self) -> Counter[Any]:
        """seq -> how many times it was answered 2xx."""
        return Counter(r.seq for r in self.snapshot() if r.delivered)

    def delivered_seqs(self) -> set[Any]:
        return set(self.deliveries())

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.snapshot())

    @property
    def in_progress(self) -> int:
        """Requests read but not answered yet."""
        with self._lock:
            return self._in_progress

    # --- life cycle ------------------------------------------------------------------
    def stop(self) -> None:
        """Stop listening and drop every open connection (the receiver is down)."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(5)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked reading it
            _abort(conn)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = _Reader(conn)
        try:
            while not self._closing.is_set():
                request = reader.request()
                if request is None:
                    return
                if not self._answer(conn, request):
                    return
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            _close(conn)

    def _answer(self, conn: socket.socket, parsed: tuple[str, str, dict[str, str], bytes]) -> bool:
        """Answer one request; False when the connection must end."""
        method, path, headers, raw = parsed
        sandbox_request = Request(path, headers, raw)
        refusal = check_request(method, sandbox_request, token=TEST_TOKEN, account=TEST_ACCOUNT)
        seen = Received(path, headers, sandbox_request.body)
        with self._lock:
            self._in_progress += 1
            self.received.append(seen)  # recorded on arrival; its outcome is filled in below
        try:
            if refusal is not None:
                action: Action = Answer(refusal.status, refusal.body)
            else:
                if self.latency:
                    self._closing.wait(self.latency)
                action = self.script(seen)
            return self._act(conn, action, seen, keep_alive=_keep_alive(headers))
        finally:
            with self._lock:
                self._in_progress -= 1

    def _act(
        self, conn: socket.socket, action: Action, seen: Received, *, keep_alive: bool
    ) -> bool:
        if isinstance(action, Reset):
            seen.outcome = "reset"
            _abort(conn)
            return False
        if isinstance(action, Stall):
            seen.outcome = "stall"
            self._closing.wait(action.seconds)
            _abort(conn)
            return False
        if isinstance(action, Garbage):
            seen.outcome = "garbage"
            conn.sendall(action.data)
            return False
        seen.outcome = str(action.status)
        head, body = _http_answer(action, keep_alive=keep_alive)
        if len(body) <= _ONE_WRITE:
            conn.sendall(head + body)  # one write: no Nagle / delayed-ACK stall between two
            seen.answered = True
        else:
            conn.sendall(head)
            # Answered once the status is out: a client may hang up on a long body (the
            # worker reads 8 KiB at most), and LimeChat has done its work by then anyway.
            seen.answered = True
            conn.sendall(body)
        return keep_alive


class _Reader:
    """Reads HTTP/1.1 requests off one connection."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    def request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HEAD or not self._fill():
                return None
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large")
        while len(self._buffer) < length:
            if not self._fill():
                return None
        raw, self._buffer = self._buffer[:length], self._buffer[length:]
        return method, path, headers, raw

    def _fill(self) -> bool:
        chunk = self._conn.recv(65536)
        self._buffer += chunk
        return bool(chunk)


def _keep_alive(headers: dict[str, str]) -> bool:
    return headers.get("connection", "").lower() != "close"


def _http_answer(answer: Answer, *, keep_alive: bool) -> tuple[bytes, bytes]:
    """The status line and headers, and the body."""
    body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = "Whatever"
    lines = [
        f"HTTP/1.1 {answer.status} {reason}",
        f"Content-Type: {answer.content_type}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in answer.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body


def _abort(conn: socket.socket) -> None:
    """Close with a TCP reset instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(conn)


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()
