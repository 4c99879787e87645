"""A real ``limechat-events web`` in a subprocess, and the headers that log in to it."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import WorkerProcess, wait_for

WEB_USER = "ops"
WEB_PASSWORD = "console-password-7c1e-never-shown"


def basic(user: str = WEB_USER, password: str = WEB_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextmanager
def running_console(env: dict[str, str], *args: str) -> Iterator[tuple[WorkerProcess, str]]:
    """``limechat-events web --port 0 ARGS``; yields the process and the URL it printed."""
    web = WorkerProcess(env, ["-m", "worker", "web", "--port", "0", *args]).start(wait_ready=False)
    try:
        found = wait_for(
            lambda: re.search(r"console: (http://\S+)", web.text()) or web.proc.poll() is not None,  # type: ignore[union-attr]
            60,
            "the console to print its URL",
        )
        if not isinstance(found, re.Match):
            raise AssertionError("the console exited at start:\n" + web.text())
        yield web, found.group(1)
    finally:
        web.stop()
