"""A worker stopped while it is still starting exits 0, as any warm stop does.

A deploy or a supervisor may send SIGTERM at any moment, including while the processes are
still importing and connecting: before Celery installs its handlers the default action killed
them, and the command exited 143 (128 + SIGTERM). Nothing has been taken then; it is a clean stop.
(The interpreter's own first fraction of a second, before any of our code runs, is out of
reach of a Python handler: the earliest moment tested is after it.)
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import WorkerProcess, worker_env
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("after", [0.7, 1.0, 1.5])
def test_sigterm_while_starting_exits_0(
    redis_url: str, receiver: Sandbox, processes: str, after: float
) -> None:
    env = worker_env(redis_url, receiver.url, LIMECHAT_WORKER_PROCESSES=processes)
    worker = WorkerProcess(env).start(wait_ready=False)
    try:
        time.sleep(after)
        assert worker.terminate(timeout=30) == 0, worker.text()
    finally:
        worker.stop()
