"""``limechat-events worker [--processes N] [--concurrency N]``, end to end: how many processes
run, how many deliveries each has in flight at once, and one process per CPU by default.

Processes are counted three ways that must agree: the supervisor's children (``/proc``), the
heartbeats their schedulers write (what ``stats`` counts as *workers alive*), and the
``worker ready`` lines. Threads are counted by what a receiver sees: requests it holds open.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from producer import Producer, contract
from tests.chaos.receiver import Action, Answer, ChaosReceiver, Received
from tests.helpers import WorkerProcess, wait_for, worker_env
from tests.observe import child_pids, heartbeat_pids
from worker.cpus import available_cpus

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def stop(worker: WorkerProcess) -> int:
    try:
        return worker.terminate(30)
    finally:
        worker.kill()


def test_processes_and_concurrency_from_the_command_line(
    redis_url: str, r: redis.Redis, producer: Producer
) -> None:
    processes, threads = 2, 3
    release = threading.Event()

    def hold(_: Received) -> Action:
        release.wait(60)
        return Answer()

    receiver = ChaosReceiver(hold)
    # (the environment says 1 process of 4 threads: the options must win)
    env = worker_env(
        redis_url,
        receiver.url,
        LOG_LEVEL="INFO",
        LIMECHAT_TIMEOUT_SECONDS="60",
        LIMECHAT_VISIBILITY_TIMEOUT="120",
        # One event per delivery: coalescing would carry the waiting messages along with the
        # ones taken (worker/coalesce.py), and this counts one request per thread.
        LIMECHAT_BATCH_SIZE="1",
    )
    argv = ["-m", "worker", "worker", "--processes", str(processes)]
    argv += ["--concurrency", str(threads)]
    worker = WorkerProcess(env, argv).start(wait_ready=False)
    try:
        # Given the command started: N worker processes, each reporting in
        wait_for(lambda: worker.text().count("worker ready") == processes, 40, "the processes")
        assert worker.proc is not None
        children = child_pids(worker.proc.pid)
        assert len(children) == processes, worker.text()[-3000:]
        wait_for(lambda: heartbeat_pids(r) == children, 20, "a heartbeat from each child")
        # When more events are queued than all threads together can hold
        capacity = processes * threads
        for seq in range(capacity + 2):
            producer.send_event("order_placed", phone=PHONE, data={"seq": seq})
        # Then exactly processes x threads requests are in flight, the rest wait on the queue
        wait_for(
            lambda: receiver.in_progress == capacity and r.llen(contract.QUEUE) == 2,
            30,
            f"{capacity} requests in flight and 2 messages waiting",
        )
        watch_until = time.monotonic() + 1.0  # (no thread beyond those may take one)
        while time.monotonic() < watch_until:
            assert receiver.in_progress <= capacity
            time.sleep(0.02)
        assert receiver.in_progress == capacity and r.llen(contract.QUEUE) == 2
        release.set()
        wait_for(lambda: len(receiver.delivered_seqs()) == capacity + 2, 30, "every delivery")
        assert set(receiver.deliveries().values()) == {1}
        assert stop(worker) == 0, worker.text()[-3000:]
    finally:
        release.set()
        worker.kill()
        receiver.stop()
    assert worker.text().count(f"concurrency: {threads} (thread)") == processes  # Celery's banner


def test_one_process_per_cpu_by_default(redis_url: str, r: redis.Redis) -> None:
    env = worker_env(redis_url, "http://127.0.0.1:9/api/v1/cvf-events", LOG_LEVEL="INFO")
    del env["LIMECHAT_WORKER_PROCESSES"]
    cpus = available_cpus()
    worker = WorkerProcess(env).start(wait_ready=False)
    try:
        wait_for(lambda: worker.text().count("worker ready") >= cpus, 40, f"{cpus} processes")
        assert worker.proc is not None
        pids = child_pids(worker.proc.pid) if cpus > 1 else {worker.proc.pid}
        assert len(pids) == cpus, worker.text()[-3000:]
        wait_for(lambda: heartbeat_pids(r) == pids, 20, "a heartbeat from each process")
        assert stop(worker) == 0, worker.text()[-3000:]
    finally:
        worker.kill()
    assert worker.text().count("worker ready") == cpus


def test_one_cpu_allowed_means_one_process(redis_url: str, r: redis.Redis) -> None:
    """Under ``taskset`` (an affinity mask of one CPU) the default is one process, no supervisor."""
    env = worker_env(redis_url, "http://127.0.0.1:9/api/v1/cvf-events", LOG_LEVEL="INFO")
    del env["LIMECHAT_WORKER_PROCESSES"]
    one = min(os.sched_getaffinity(0))
    code = (
        "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])});"
        " from worker.cli import main; main(['worker'], prog_name='limechat-events')"
    )
    worker = WorkerProcess(env, ["-c", code, str(one)]).start()
    try:
        assert worker.proc is not None
        pid = worker.proc.pid
        wait_for(lambda: heartbeat_pids(r) == {pid}, 20, "the one process's heartbeat")
        assert child_pids(pid) == set(), "no supervisor for one process"
        assert stop(worker) == 0, worker.text()[-3000:]
    finally:
        worker.kill()
    assert worker.text().count("worker ready") == 1
