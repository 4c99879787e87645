"""Stopping ``limechat-events worker --processes 2`` with Ctrl-C, as the README says it stops.

- SIGINT to the command (``kill -INT PID``) reaches the worker processes as SIGTERM: a warm
  shutdown; the POST in flight finishes and is recorded; exit 0.
- Ctrl-C at a terminal (SIGINT to the whole foreground process group): the same warm shutdown,
  exit 0.
- A second Ctrl-C: Celery's cold shutdown; running deliveries are not waited for (their
  messages are delivered again, markers permitting); exit 1.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from producer import Producer
from tests.helpers import WorkerProcess, running_worker, wait_for, worker_env
from worker.stats import snapshot

from .receiver import Action, Answer, ChaosReceiver, Received
from .support import held_seqs, nothing_held

pytestmark = pytest.mark.integration

PHONE = "+915673412780"
#: How long the receiver keeps the first request waiting at most: a POST surely in flight.
SLOW = 6.0
#: After a warm shutdown began, how long the held POST is kept out still: Celery's stop steps
#: take milliseconds, so by then the worker is waiting for the POST to finish, not before it.
HELD_INTO_SHUTDOWN = 1.0


class SlowFirst(ChaosReceiver):
    """Answers its first request after :data:`SLOW` seconds (noting when), the others at once."""

    def __init__(self) -> None:
        super().__init__(self.answer)
        self.first_answered_at: float | None = None
        self.released = threading.Event()
        self._first = threading.Lock()

    def answer(self, req: Received) -> Action:
        if self._first.acquire(blocking=False):
            self.released.wait(SLOW)
            self.first_answered_at = time.monotonic()
        return Answer()


def answer_once_shutting_down(worker: WorkerProcess, receiver: SlowFirst, processes: int) -> None:
    """Answer the held POST only once every process has begun its warm shutdown (and a moment
    more), instead of after :data:`SLOW` seconds: the shutdown surely waits for the POST."""
    wait_for(
        lambda: (
            worker.text().count("worker: Warm shutdown") >= processes
            or receiver.first_answered_at is not None
        ),
        20,
        "the warm shutdown to begin",
    )
    assert receiver.first_answered_at is None, "the POST was answered before the shutdown began"
    time.sleep(HELD_INTO_SHUTDOWN)
    receiver.released.set()


@pytest.fixture
def slow_first() -> Iterator[SlowFirst]:
    receiver = SlowFirst()
    yield receiver
    receiver.released.set()
    receiver.stop()


def start(redis_url: str, receiver: ChaosReceiver, processes: int, **extra: str) -> WorkerProcess:
    env = worker_env(
        redis_url,
        receiver.url,
        LOG_LEVEL="INFO",
        LIMECHAT_TIMEOUT_SECONDS="30",
        LIMECHAT_VISIBILITY_TIMEOUT="60",
        **extra,
    )
    argv = ["-m", "worker", "worker", "--processes", str(processes)]
    worker = WorkerProcess(env, argv).start(wait_ready=False)
    wait_for(lambda: worker.text().count("worker ready") == processes, 40, "the processes")
    return worker


def test_sigint_to_the_command_reaches_the_processes_as_sigterm_a_warm_shutdown(
    redis_url: str, r: redis.Redis, producer: Producer, slow_first: SlowFirst
) -> None:
    worker = start(redis_url, slow_first, processes=2)
    try:
        # Given a POST in flight
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        wait_for(lambda: slow_first.in_progress == 1, 20, "the POST in flight")
        # When the command alone gets SIGINT (kill -INT PID)
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGINT)
        answer_once_shutting_down(worker, slow_first, 2)
        code = worker.wait_exit(40)
    finally:
        worker.kill()
    # Then it exits 0 after the POST finished and its outcome was recorded
    assert code == 0, worker.text()[-3000:]
    assert dict(slow_first.deliveries()) == {0: 1}
    assert snapshot(r, None, None)["counters"]["delivered"] == 1
    assert nothing_held(r)
    # and both processes shut down warm, told by SIGTERM (Celery's SIGINT handler says more)
    assert worker.text().count("worker: Warm shutdown") == 2, worker.text()[-3000:]
    assert "Hitting Ctrl+C again" not in worker.text()


@pytest.mark.parametrize("processes", [2, 1])
def test_ctrl_c_at_a_terminal_is_a_warm_shutdown_that_exits_0(
    redis_url: str, r: redis.Redis, producer: Producer, slow_first: SlowFirst, processes: int
) -> None:
    worker = start(redis_url, slow_first, processes)
    try:
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        wait_for(lambda: slow_first.in_progress == 1, 20, "the POST in flight")
        # When Ctrl-C is pressed: the terminal sends SIGINT to the foreground process group
        assert worker.proc is not None
        os.killpg(worker.proc.pid, signal.SIGINT)
        answer_once_shutting_down(worker, slow_first, processes)
        code = worker.wait_exit(40)
    finally:
        worker.kill()
    assert dict(slow_first.deliveries()) == {0: 1}
    assert snapshot(r, None, None)["counters"]["delivered"] == 1 and nothing_held(r)
    assert code == 0, worker.text()[-3000:]


def test_a_second_ctrl_c_is_a_cold_shutdown_that_exits_1_without_waiting_for_the_post(
    redis_url: str, r: redis.Redis, producer: Producer, slow_first: SlowFirst
) -> None:
    worker = start(redis_url, slow_first, processes=2)
    try:
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        wait_for(lambda: slow_first.in_progress == 1, 20, "the POST in flight")
        assert worker.proc is not None
        started = time.monotonic()
        os.killpg(worker.proc.pid, signal.SIGINT)
        wait_for(lambda: worker.saw("Hitting Ctrl+C again"), 10, "the warm shutdown to begin")
        os.killpg(worker.proc.pid, signal.SIGINT)
        code = worker.wait_exit(40)
        exited_at = time.monotonic()
    finally:
        worker.kill()
    # Then it exits 1, before the POST that was still running got its answer
    assert code == 1, worker.text()[-3000:]
    answered_at = slow_first.first_answered_at
    assert answered_at is None or exited_at < answered_at, (
        f"the cold shutdown took {exited_at - started:.1f}s: it waited for the running POST"
        f" (answered after {answered_at - started:.1f}s)\n" + worker.text()[-3000:]
    )
    assert "Unrecoverable error" not in worker.text(), worker.text()[-3000:]
    # and the event is not lost: still in Redis, and delivered again by the next worker
    assert 0 in held_seqs(r)
    env = worker_env(redis_url, slow_first.url, LIMECHAT_VISIBILITY_TIMEOUT="2")
    with running_worker(env):
        wait_for(
            lambda: any(x.seq == 0 and x.delivered for x in slow_first.snapshot()[1:]),
            30,
            "the event delivered again",
        )
