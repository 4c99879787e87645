"""The HTTP client for LimeChat's Custom Events endpoint: one keep-alive pool, one connection
per delivery thread.

It speaks urllib3 directly rather than through ``requests``: a profile of the worker put a
quarter of its CPU per event in ``requests``' own layers (request preparation, hooks, cookie
handling, adapters), none of which a fixed JSON POST needs; urllib3 is what ``requests`` sends
with, and the keep-alive, timeouts and TLS verification are the same.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError

from producer.envelope import Event, request_body

from . import __version__
from .accounts import Account

#: How much of a response body is kept (for the DLQ and logs); the rest is not even read.
MAX_BODY_CHARS = 2048
_MAX_BODY_BYTES = MAX_BODY_CHARS * 4  # enough bytes for that many characters


@dataclass(frozen=True)
class Answer:
    """What came back from one POST: a status and body, or the error that stood in for them."""

    status: int | None
    body: str
    retry_after: str | None
    error: str
    timed_out: bool
    ms: int


class LimechatClient:
    """POSTs events exactly as LimeChat documents them, each with the headers of the account
    it is given; safe to share between threads (one pool serves every account)."""

    def __init__(self, api_url: str, timeout: float, *, connections: int = 16) -> None:
        self.api_url = api_url
        parts = urlsplit(api_url)
        self._path = parts.path or "/"
        if parts.query:
            self._path += f"?{parts.query}"
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"limechat-events/{__version__}",
        }
        # One keep-alive connection per delivery thread; connecting should be quick even
        # when the answer is slow. No retries and no redirects here: the worker decides.
        self._pool = urllib3.PoolManager(
            maxsize=connections,
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            retries=False,
        ).connection_from_url(api_url)

    def __repr__(self) -> str:  # the token must never show up in a repr
        return f"LimechatClient(api_url={self.api_url!r})"

    def post(self, event: Event, account: Account) -> Answer:
        """One attempt for ``account``; never raises for network trouble (``error`` then)."""
        body = json.dumps(request_body(event), ensure_ascii=False).encode("utf-8")
        headers = {
            **self._headers,
            "x-limechat-uat": account.token,
            "x-fb-account-id": account.id,
        }
        started = time.monotonic()
        try:
            response = self._pool.urlopen(
                "POST",
                self._path,
                body=body,
                headers=headers,
                redirect=False,
                preload_content=False,
            )
            text = _read_bounded(response)
            return Answer(
                status=response.status,
                body=text,
                retry_after=response.headers.get("Retry-After"),
                error="",
                timed_out=False,
                ms=_ms_since(started),
            )
        except NewConnectionError as exc:  # refused, unreachable (a TimeoutError subclass)
            return _failed("ConnectionError", exc, started, timed_out=False)
        except TimeoutError as exc:
            return _failed("Timeout", exc, started, timed_out=True)
        except HTTPError as exc:  # reset, protocol or TLS trouble
            return _failed("ConnectionError", exc, started, timed_out=False)

    def close(self) -> None:
        self._pool.close()


def _read_bounded(response: urllib3.BaseHTTPResponse) -> str:
    """The first :data:`MAX_BODY_CHARS` of the body; a huge body is cut off, not downloaded."""
    try:
        data = response.read(_MAX_BODY_BYTES + 1)
        if len(data) > _MAX_BODY_BYTES:
            response.close()  # more is coming: drop this connection rather than read it all
        else:
            response.release_conn()  # read to the end: the connection stays alive
    except HTTPError:
        response.close()
        raise
    text = data.decode("utf-8", errors="replace")
    if len(text) > MAX_BODY_CHARS:
        return text[:MAX_BODY_CHARS] + "…[truncated]"
    return text


def _failed(kind: str, exc: Exception, started: float, *, timed_out: bool) -> Answer:
    return Answer(
        status=None,
        body="",
        retry_after=None,
        error=f"{kind}: {type(exc).__name__}: {exc}"[:MAX_BODY_CHARS],
        timed_out=timed_out,
        ms=_ms_since(started),
    )


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
