"""A worker whose scheduler thread dies stops with a non-zero exit, to be replaced.

Without its scheduler a worker goes on taking and delivering new events while every parked
retry of the cluster that it would have promoted waits; worse, nothing says so. The worker must
notice, stop (deliveries in flight finish) and exit non-zero, so that a supervisor restarting on
failure (ours, systemd, Kubernetes) replaces it.
"""

from __future__ import annotations

import pytest

from tests.helpers import WorkerProcess, wait_for, worker_env
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration


def test_a_worker_whose_scheduler_died_exits_1(redis_url: str, receiver: Sandbox) -> None:
    env = worker_env(redis_url, receiver.url)
    worker = WorkerProcess(env, ["-m", "tests.chaos.scheduler_dies"]).start()
    try:
        wait_for(lambda: worker.proc is not None and worker.proc.poll() is not None, 30, "exit")
        assert worker.proc is not None
        assert worker.proc.returncode == 1, worker.text()
        assert worker.saw("the scheduler thread died")
        assert worker.saw("stopping this worker so that it is replaced")
    finally:
        worker.stop()
