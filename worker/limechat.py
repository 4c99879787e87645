"""The HTTP client for LimeChat's Custom Events endpoint: one keep-alive session per thread."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import requests

from producer.envelope import Event, request_body

from . import __version__

#: How much of a response body is kept (for the DLQ and logs); the rest is not even read.
MAX_BODY_CHARS = 2048
_CHUNK = 4096


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
    """POSTs events exactly as LimeChat documents them."""

    def __init__(self, api_url: str, access_token: str, account_id: str, timeout: float) -> None:
        self.api_url = api_url
        self._headers = {
            "Content-Type": "application/json",
            "x-limechat-uat": access_token,
            "x-fb-account-id": account_id,
            "User-Agent": f"limechat-events/{__version__}",
        }
        # Connecting should be quick even when the answer is slow.
        self._timeout = (min(timeout, 5.0), timeout)
        self._local = threading.local()

    def __repr__(self) -> str:  # the token must never show up in a repr
        return f"LimechatClient(api_url={self.api_url!r})"

    def post(self, event: Event) -> Answer:
        """One attempt; never raises for network trouble, which comes back as ``error``."""
        body = json.dumps(request_body(event), ensure_ascii=False).encode("utf-8")
        started = time.monotonic()
        try:
            response = self._session().post(
                self.api_url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
            with response:
                text = _read_bounded(response)
            return Answer(
                status=response.status_code,
                body=text,
                retry_after=response.headers.get("Retry-After"),
                error="",
                timed_out=False,
                ms=_ms_since(started),
            )
        except requests.Timeout as exc:
            return self._failed(exc, started, timed_out=True)
        except requests.RequestException as exc:
            return self._failed(exc, started, timed_out=False)

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no .netrc credentials, no proxy surprises
            self._local.session = session
        return session

    def _failed(self, exc: Exception, started: float, *, timed_out: bool) -> Answer:
        # A broken connection must not be reused by the next attempt.
        self.close()
        self._local.session = None
        return Answer(
            status=None,
            body="",
            retry_after=None,
            error=f"{type(exc).__name__}: {exc}"[:MAX_BODY_CHARS],
            timed_out=timed_out,
            ms=_ms_since(started),
        )


def _read_bounded(response: requests.Response) -> str:
    """The first :data:`MAX_BODY_CHARS` of the body; a huge body is cut off, not downloaded."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_CHARS * 4:  # enough bytes for MAX_BODY_CHARS characters
            break
    text = b"".join(chunks).decode("utf-8", errors="replace")
    if len(text) > MAX_BODY_CHARS:
        return text[:MAX_BODY_CHARS] + "…[truncated]"
    return text


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
