"""A worker stopped while it is still starting exits 0, as any warm stop does.

A deploy or a supervisor may send SIGTERM at any moment, including while the processes are
still importing and connecting: before Celery installs its handlers the default action killed
them, and the command exited 143 (128 + SIGTERM). Nothing has been taken then; it is a clean stop.
(The interpreter's own first fraction of a second, before any of our code runs, is out of
reach of a Python handler: the earliest moment tested is after it.)
"""

from __future__ import annotations

import os
import signal
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


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_while_starting_exits_0(redis_url: str, receiver: Sandbox, processes: str) -> None:
    # (click printed "Aborted!" and exited 1)
    env = worker_env(redis_url, receiver.url, LIMECHAT_WORKER_PROCESSES=processes)
    worker = WorkerProcess(env).start(wait_ready=False)
    try:
        time.sleep(1.0)
        assert worker.proc is not None
        os.killpg(worker.proc.pid, signal.SIGINT)  # (what a terminal's Ctrl-C does)
        assert worker.wait_exit(30) == 0, worker.text()
        assert "Aborted" not in worker.text()
    finally:
        worker.stop()


def test_two_stop_signals_at_once_never_hang_the_worker(redis_url: str, receiver: Sandbox) -> None:
    # A process group's SIGTERM and the supervisor's arrive together: Celery ran its stop
    # handler nested inside the first, and a lock taken there (its own signal's, our stop
    # event's) deadlocked the worker. Rare per try, so ten tries.
    env = worker_env(redis_url, receiver.url)
    for _ in range(10):
        worker = WorkerProcess(env).start()
        try:
            assert worker.proc is not None
            for _ in range(3):
                os.kill(worker.proc.pid, signal.SIGTERM)
            assert worker.wait_exit(20) == 0, worker.text()[-3000:]
        finally:
            worker.stop()
