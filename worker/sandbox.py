"""A local stand-in for LimeChat's Custom Events endpoint, for development and tests.

It checks each request the way the real endpoint documents it (headers, a JSON body with
``distinct_id``, ``phone``, ``event``, ``data``), answers 200 or a 4xx that says what is wrong,
and prints what it receives. Tests give it a ``responder`` to script other answers.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

PATH = "/api/v1/cvf-events"
_BODY_FIELDS = ("distinct_id", "phone", "event", "data")
_MAX_REQUEST_BYTES = 1024 * 1024
#: Requests a sandbox keeps by default (the newest): a long-running one must not grow forever.
DEFAULT_LOG_SIZE = 10_000


@dataclass
class Request:
    """One request as the sandbox saw it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any = None
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


#: Given a request that passed the checks, return a different reply (or None for 200).
Responder = Callable[[Request], "Reply | None"]


#: Several accounts: account id -> the token (or tokens, as during a rotation) it accepts.
AccountTokens = Mapping[str, "str | Collection[str]"]


def check_request(
    method: str,
    request: Request,
    *,
    token: str | None,
    account: str | None,
    accounts: AccountTokens | None = None,
) -> Reply | None:
    """The 4xx LimeChat would answer for ``request``, or None if it is well-formed.

    With ``accounts``, the account must be one of them and the token one of its own.
    """
    if request.path.split("?", 1)[0] != PATH:
        return Reply(404, {"error": f"no such endpoint; POST to {PATH}"})
    if method != "POST":
        return Reply(405, {"error": "use POST"})
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        return Reply(400, {"error": "Content-Type must be application/json"})
    uat = request.headers.get("x-limechat-uat", "")
    if not uat or (token is not None and uat != token):
        return Reply(401, {"error": "missing or wrong x-limechat-uat"})
    fb_account = request.headers.get("x-fb-account-id", "")
    if not fb_account:
        return Reply(400, {"error": "missing x-fb-account-id"})
    if account is not None and fb_account != account:
        return Reply(403, {"error": "x-fb-account-id does not match this token"})
    if accounts is not None:
        known = accounts.get(fb_account)
        if known is None:
            return Reply(403, {"error": "no such x-fb-account-id"})
        if uat not in ({known} if isinstance(known, str) else set(known)):
            return Reply(401, {"error": "x-limechat-uat is not this account's token"})
    try:
        request.body = json.loads(request.raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Reply(400, {"error": "body is not UTF-8"})
    except json.JSONDecodeError as exc:
        return Reply(400, {"error": f"body is not valid JSON: {exc}"})
    return check_body(request.body)


def body_length(header: str | None) -> int | None:
    """The body's length in bytes from a ``Content-Length`` header (0 if there is none), or
    None if it is not a whole number of bytes (negative, a sign, not digits)."""
    if header is None:
        return 0
    text = header.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    if len(text) > 18:  # (far past any limit; int() refuses thousands of digits)
        return _MAX_REQUEST_BYTES + 1
    return int(text)


def check_body(body: Any) -> Reply | None:
    """The 400 for a body that does not have LimeChat's shape, or None."""
    if not isinstance(body, dict):
        return Reply(400, {"error": "body must be a JSON object"})
    extra = sorted(set(body) - set(_BODY_FIELDS))
    missing = [name for name in _BODY_FIELDS if name not in body]
    if missing or extra:
        return Reply(400, {"error": f"missing fields {missing}, unexpected fields {extra}"})
    for name in ("distinct_id", "phone", "event"):
        if not isinstance(body[name], str) or not body[name]:
            return Reply(400, {"error": f"{name} must be a non-empty string"})
    phone = body["phone"]
    if not phone.startswith("+") or not phone[1:].isdigit():
        return Reply(400, {"error": "phone must include the country code, e.g. +915673412780"})
    if not isinstance(body["data"], dict):
        return Reply(400, {"error": "data must be a JSON object"})
    return None


class Sandbox:
    """The sandbox server; ``start()`` runs it in a thread, ``serve_forever()`` in this one.

    It keeps the newest ``log_size`` requests (``requests``, ``accepted()``) and counts every
    one (``received``, ``by_status``), so a sandbox left running does not grow without bound.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        account: str | None = None,
        accounts: AccountTokens | None = None,
        responder: Responder | None = None,
        out: TextIO | None = None,
        log_size: int = DEFAULT_LOG_SIZE,
    ) -> None:
        if log_size < 1:
            raise ValueError(f"log_size must be at least 1, not {log_size}")
        self.token = token
        self.account = account
        self.accounts = accounts
        self.responder = responder
        self.out = out
        self.log_size = log_size
        #: Every request answered, kept or not, and how many got each status.
        self.received = 0
        self.by_status: Counter[int] = Counter()
        self._log: deque[tuple[Request, int]] = deque(maxlen=log_size)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    def start(self) -> Sandbox:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        # (stop() waits for the loop to look again: every 0.5 s by default, which every test
        # that stops a sandbox paid; 20 wake-ups a second cost nothing measurable)
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def requests(self) -> list[tuple[Request, int]]:
        """The newest ``log_size`` requests with the status each was answered, oldest first."""
        with self._lock:
            return list(self._log)

    def accepted(self) -> list[Request]:
        """The kept requests answered with 2xx, in arrival order."""
        return [r for r, status in self.requests if 200 <= status < 300]

    def handle(self, method: str, request: Request) -> Reply:
        reply = check_request(
            method, request, token=self.token, account=self.account, accounts=self.accounts
        )
        if reply is None and self.responder is not None:
            reply = self.responder(request)
        return self.record(request, reply or Reply(200, {"status": "success"}))

    def record(self, request: Request, reply: Reply) -> Reply:
        """Keep and count ``request`` with its ``reply``, print it if asked; returns the reply."""
        with self._lock:
            self._log.append((request, reply.status))
            self.received += 1
            self.by_status[reply.status] += 1
        if self.out is not None:
            self._print(request, reply)
        return reply

    def _print(self, request: Request, reply: Reply) -> None:
        body = request.body
        if isinstance(body, dict) and 200 <= reply.status < 300:
            line = (
                f"{reply.status} event={body.get('event')} distinct_id={body.get('distinct_id')}"
                f" phone={body.get('phone')} data={json.dumps(body.get('data'))}"
            )
        else:
            line = f"{reply.status} {reply.body.get('error', '')}"
        print(f"sandbox: {line}", file=self.out, flush=True)


def _handler_for(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoint
        # Headers and body go out in separate writes; with Nagle on, a keep-alive client
        # waits ~40 ms for the delayed ACK on every request.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self._serve("POST")

        def do_GET(self) -> None:
            self._serve("GET")

        def _serve(self, method: str) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            header = self.headers.get("Content-Length")
            length = body_length(header)
            refusal = None
            if length is None:
                error = f"Content-Length {header!r} is not a whole number of bytes"
                refusal = Reply(400, {"error": error})
            elif length > _MAX_REQUEST_BYTES:
                refusal = Reply(413, {"error": "request body too large"})
            if refusal is not None:
                # The body is left unread, so nothing more can be read off this connection.
                refusal.headers["Connection"] = "close"
                self._reply(sandbox.record(Request(self.path, headers, b""), refusal))
                return
            raw = self.rfile.read(length) if length else b""
            self._reply(sandbox.handle(method, Request(self.path, headers, raw)))

        def _reply(self, reply: Reply) -> None:
            payload = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the sandbox prints its own, shorter lines

    return Handler


def main(host: str, port: int, token: str | None, account: str | None) -> None:
    sandbox = Sandbox(host, port, token=token, account=account, out=sys.stdout)
    print(f"sandbox: LimeChat stand-in listening on {sandbox.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sandbox.serve_forever()
