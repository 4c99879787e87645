"""``limechat-events worker --processes N``: real processes started, replaced and stopped.

The supervisor's own behaviour is tried over stand-in children (tests/integration/supervised.py:
they sleep until SIGTERM); then a real two-process worker delivers and stops on one SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest
import redis

from producer import Producer
from tests.helpers import (
    TEST_ACCOUNT,
    TEST_TOKEN,
    PortNotingSandbox,
    WorkerProcess,
    run_cli,
    running_worker,
    wait_for,
    worker_env,
)
from worker.sandbox import Sandbox
from worker.stats import snapshot

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def supervised(startup_seconds: float, processes: int, fail_once: str = "-") -> WorkerProcess:
    argv = ["-m", "tests.integration.supervised", str(startup_seconds), str(processes), fail_once]
    return WorkerProcess(dict(os.environ), argv).start(wait_ready=False)


def children(proc: WorkerProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"child ready (\d+)", proc.text())]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"  # a zombie has finished; only its parent's wait is missing


def test_a_child_that_dies_is_replaced_and_one_sigterm_stops_them_all() -> None:
    sup = supervised(startup_seconds=0, processes=2)
    try:
        wait_for(lambda: len(children(sup)) == 2, 20, "two children")
        first, second = children(sup)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(children(sup)) == 3, 20, "a third child replacing the killed one")
        assert sup.saw(f"worker process {first} exited with code -9")
        assert sup.saw("starting another")
        replacement = children(sup)[2]
        assert sup.proc is not None
        os.kill(sup.proc.pid, signal.SIGTERM)  # the supervisor only, as `docker stop` does
        assert sup.wait_exit(20) == 0, sup.text()
    finally:
        sup.kill()
    assert all(gone(pid) for pid in (second, replacement))


def test_a_child_failing_at_start_stops_the_others_with_its_exit_code(tmp_path: Path) -> None:
    sup = supervised(startup_seconds=30, processes=2, fail_once=str(tmp_path / "failed"))
    try:
        assert sup.wait_exit(30) == 3, sup.text()
    finally:
        sup.kill()
    assert sup.saw("exited with code 3") and sup.saw("stopping the others")
    # The other child is gone too: it said it was ready, or was stopped before it could
    started = children(sup)
    assert len(started) <= 1 and all(gone(pid) for pid in started), started


def test_children_do_not_outlive_a_supervisor_killed_with_sigkill() -> None:
    sup = supervised(startup_seconds=30, processes=2)
    try:
        wait_for(lambda: len(children(sup)) == 2, 20, "two children")
        assert sup.proc is not None
        os.kill(sup.proc.pid, signal.SIGKILL)  # the supervisor only: no chance to pass it on
        wait_for(lambda: all(gone(pid) for pid in children(sup)), 10, "the children to stop")
    finally:
        sup.kill()


def worker_pids(worker: WorkerProcess) -> list[int]:
    """The processes that said ``worker ready (host:pid)``."""
    return [int(pid) for pid in re.findall(r"worker ready \([^)]*:(\d+)\)", worker.text())]


def test_two_worker_processes_share_the_queue_and_stop_on_one_sigterm(
    redis_url: str, r: redis.Redis, producer: Producer
) -> None:
    # (a sandbox that notes each request's client port: which process sent it)
    receiver = PortNotingSandbox(token=TEST_TOKEN, account=TEST_ACCOUNT)
    receiver.start()
    env = worker_env(redis_url, receiver.url, LIMECHAT_WORKER_PROCESSES="2", LOG_LEVEL="INFO")
    worker = WorkerProcess(env).start(wait_ready=False)
    try:
        wait_for(lambda: len(worker_pids(worker)) == 2, 30, "two worker processes")
        wait_for(lambda: snapshot(r, None, None)["workers_alive"] == 2, 10, "two heartbeats")
        producer.send_events([{"event": "order_placed", "phone": PHONE}] * 100)
        wait_for(lambda: len(receiver.accepted()) == 100, 30, "100 deliveries")
        # Both processes delivered: every request came over a connection one of them holds
        by_process = receiver.accepted_by_process(worker_pids(worker))
        assert sum(by_process.values()) == 100 and all(by_process.values()), by_process
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGTERM)
        assert worker.wait_exit(30) == 0, worker.text()[-3000:]
    finally:
        worker.kill()
        receiver.stop()
    assert worker.text().count("worker: Warm shutdown") == 2, worker.text()[-3000:]
    assert r.llen("limechat:events") == 0 and r.hlen("limechat:unacked") == 0


def test_a_bad_setting_stops_the_command_before_any_process_starts(redis_url: str) -> None:
    env = worker_env(redis_url, "http://127.0.0.1:9/", LIMECHAT_WORKER_PROCESSES="two")
    result = run_cli(env, "worker")
    assert result.returncode == 2
    assert "LIMECHAT_WORKER_PROCESSES='two' is not a whole number" in result.stderr


def test_make_run_delivers_to_its_sandbox_from_two_processes_and_stops_cleanly(
    redis_url: str, producer: Producer
) -> None:
    """``limechat-events up`` without credentials: the sandbox in the parent, workers in two."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMECHAT_", "SENTRY_"))}
    env.update(REDIS_URL=redis_url, LIMECHAT_WORKER_PROCESSES="2", PYTHONUNBUFFERED="1")
    up = WorkerProcess(env, ["-m", "worker", "up", "--sandbox-port", str(port)])
    up.start(wait_ready=False)
    try:
        wait_for(lambda: up.text().count("worker ready") == 2, 30, "two worker processes")
        assert up.saw("SANDBOX MODE") and up.saw(f"127.0.0.1:{port}")
        producer.send_event("order_placed", phone=PHONE, data={"order_id": "98765"})
        wait_for(lambda: up.saw("sandbox: 200 event=order_placed"), 20, "the sandbox to print it")
        assert up.proc is not None
        os.kill(up.proc.pid, signal.SIGTERM)
        assert up.wait_exit(30) == 0, up.text()[-3000:]
    finally:
        up.kill()


def test_a_worker_that_dies_of_an_unrecoverable_error_exits_non_zero(
    redis_url: str, producer: Producer, receiver: Sandbox
) -> None:
    """Celery's ``app.worker_main`` drops the exit code (it exited 0); ours passes it on."""
    env = worker_env(redis_url, receiver.url, LOG_LEVEL="INFO")
    worker = WorkerProcess(env, ["-m", "tests.integration.crash_on_take"]).start()
    try:
        producer.send_event("order_placed", phone=PHONE)
        code = worker.wait_exit(30)
    finally:
        worker.kill()
    assert worker.saw("Unrecoverable error") and worker.saw("injected"), worker.text()[-3000:]
    assert code == 1, worker.text()[-3000:]
    # and the event it was taking is not lost: the next worker delivers it
    with running_worker(env):
        wait_for(lambda: len(receiver.accepted()) == 1, 30, "the event, by the next worker")


def test_a_cold_shutdown_is_exit_code_1_through_the_supervisor(
    redis_url: str, receiver: Sandbox
) -> None:
    """SIGQUIT (Celery's cold shutdown) exits 1, as Celery means it to; a warm one exits 0."""
    env = worker_env(redis_url, receiver.url, LIMECHAT_WORKER_PROCESSES="2", LOG_LEVEL="INFO")
    worker = WorkerProcess(env).start(wait_ready=False)
    try:
        wait_for(lambda: worker.text().count("worker ready") == 2, 30, "two worker processes")
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGQUIT)
        assert worker.wait_exit(30) == 1, worker.text()[-3000:]
    finally:
        worker.kill()
    assert worker.text().count("cold shutdown: exiting now") == 2, worker.text()[-3000:]
