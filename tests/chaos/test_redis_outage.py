"""Scenario 5: Redis restarted or crashed mid-run, with an append-only file (as in docker-compose).

Each test starts a ``redis-server`` of its own (``--appendonly yes --appendfsync everysec``) in
a temporary directory, on a free port, and takes it away under a running worker and producer.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pytest
import redis

from producer import EnqueueError, Producer, ProducerSettings, contract
from tests.helpers import running_worker, wait_for, worker_env

from .figures import record
from .receiver import Action, Answer, ChaosReceiver, Received
from .redis_server import RedisServer
from .support import (
    PHONE,
    Tally,
    all_settled,
    held_seqs,
    send_numbered,
    wait_settled,
    where_held,
)

pytestmark = pytest.mark.integration

ENQUEUE_TIMEOUT = 0.5  # LIMECHAT_ENQUEUE_TIMEOUT_SECONDS: send_event gives up within ~2x this
# The bound is the promise ("a web request never hangs"): about 2x the timeout, here with 2 s
# of slack for a loaded machine, which is still nothing like the hang it guards against.
PROMPT = 2 * ENQUEUE_TIMEOUT + 2
#: appendfsync everysec: what a crash of Redis may lose is about the last second of writes
#: before it stopped answering (README, Deploying)
EVERYSEC_WINDOW = 1.0


@pytest.fixture
def server(own_redis: Callable[..., RedisServer]) -> RedisServer:
    return own_redis()


@pytest.fixture
def producer_of(server: RedisServer) -> Iterator[Producer]:
    p = Producer(
        ProducerSettings(redis_url=server.url, enqueue_timeout=ENQUEUE_TIMEOUT, batch_size=10)
    )
    yield p
    p.close()


def timed_failure(producer: Producer, seq: int) -> float:
    """Seconds ``send_event`` took to raise EnqueueError (it must raise)."""
    started = time.monotonic()
    with pytest.raises(EnqueueError) as failure:
        producer.send_event("order_placed", phone=PHONE, data={"seq": seq})
    assert "Redis" in str(failure.value)
    return time.monotonic() - started


def unaccounted(seqs: Iterable[int], receiver: ChaosReceiver, r: redis.Redis) -> set[int]:
    """Events neither delivered nor held anywhere in Redis (queue, unacked, retries, DLQ).

    Redis is read first: an event delivered and acknowledged meanwhile is then in the
    receiver's count (read the other way round, it would be in neither).
    """
    held = held_seqs(r)
    return set(seqs) - held - receiver.delivered_seqs()


def test_send_event_fails_fast_while_redis_is_down_or_hung_and_works_again_after(
    server: RedisServer, producer_of: Producer
) -> None:
    """EnqueueError at once when refused, within ~2x the timeout when hung; fine once back."""
    r = server.client()
    kept = producer_of.send_event("order_placed", phone=PHONE)
    # When Redis is stopped (refused) and then frozen (SIGSTOP: it accepts, never answers)
    server.stop()
    refused = [timed_failure(producer_of, i) for i in range(3)]
    server.start()
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        hung = [timed_failure(producer_of, i) for i in range(3)]
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    # Then each call failed promptly, and the producer works again without being recreated
    assert max(refused) < PROMPT and max(hung) < PROMPT, (refused, hung)
    after = producer_of.send_event("order_placed", phone=PHONE)
    # ...and the event accepted before the restart survived it (append-only file)
    queued = r.lrange(contract.QUEUE, 0, -1)
    assert len(queued) == 2 and kept.encode() in queued[1] and after.encode() in queued[0]
    record(
        "5 producer while Redis is down",
        seconds_to_fail_refused=round(max(refused), 3),
        seconds_to_fail_hung=round(max(hung), 3),
        enqueue_timeout=ENQUEUE_TIMEOUT,
    )


def test_a_redis_restart_mid_run_loses_nothing_and_the_worker_resumes_by_itself(
    server: RedisServer, producer_of: Producer, chaos: ChaosReceiver
) -> None:
    """A restart (SIGTERM, the AOF flushed) under a busy worker: nothing lost, back in 30 s."""
    # Given a worker delivering 300 events through a Redis with an append-only file
    r = server.client()
    chaos.latency = 0.01
    seqs = range(300)
    send_numbered(producer_of, seqs)
    with running_worker(worker_env(server.url, chaos.url)):
        wait_for(lambda: len(chaos.delivered_seqs()) >= 100, 60, "100 deliveries")
        # When Redis is restarted as `docker compose restart` does it, down for 2 s
        server.stop()
        time.sleep(2)  # the outage itself
        server.start()
        back = time.monotonic()
        # Then every event is delivered or still held in Redis
        assert not unaccounted(seqs, chaos, r)
        # ...and the same worker delivers all of them, by itself, within 30 s
        tally = wait_settled(seqs, chaos, r, 30, "every event after the restart")
        recovered = time.monotonic() - back
    assert (tally.delivered, tally.dead_lettered) == (300, 0), tally
    record(
        "5a Redis restarted (SIGTERM, AOF)",
        events=300,
        delivered=tally.delivered,
        duplicates=tally.duplicates,
        dead_lettered=tally.dead_lettered,
        seconds_from_redis_back_to_all_delivered=round(recovered, 2),
    )


@dataclass
class Sender:
    """Sends numbered events every few milliseconds and remembers which ones Redis took."""

    producer: Producer
    accepted: dict[int, float] = field(default_factory=dict)
    refused: dict[int, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            try:
                self.producer.send_event("order_placed", phone=PHONE, data={"seq": seq})
            except EnqueueError:
                self.refused[seq] = time.monotonic()
            else:
                self.accepted[seq] = time.monotonic()
            seq += 1
            self.stop.wait(0.005)


def test_a_redis_crash_mid_run_loses_at_most_what_appendfsync_everysec_allows(
    server: RedisServer, producer_of: Producer, chaos: ChaosReceiver
) -> None:
    """Redis frozen, then SIGKILLed, under a steady stream: nothing older than ~1 s is lost."""
    # Given a worker, and a producer sending an event every 5 ms, faster than the worker's
    # 4 threads deliver at 40 ms a request: a backlog that only the append-only file keeps
    r = server.client()
    chaos.latency = 0.04
    env = worker_env(server.url, chaos.url)
    sender = Sender(producer_of)
    thread = threading.Thread(target=sender.run, daemon=True)
    assert server.proc is not None
    with running_worker(env) as worker:
        try:
            thread.start()
            started = time.monotonic()
            wait_for(
                lambda: len(chaos.delivered_seqs()) >= 100 and time.monotonic() - started > 3,
                60,
                "100 deliveries, and 3 s of sending",
            )
            # When Redis hangs (SIGSTOP) for a second, then crashes (SIGKILL), and comes back
            # from its append-only file 2 s later
            frozen = time.monotonic()
            backlog = r.llen(contract.QUEUE)
            os.kill(server.proc.pid, signal.SIGSTOP)
            time.sleep(1)
            crashed = time.monotonic()
            server.kill()
            time.sleep(2)  # the outage itself
            server.start()
            back = time.monotonic()
            time.sleep(1)  # a last second of sending to the recovered Redis
        finally:
            sender.stop.set()
            thread.join(10)
        # Then every event Redis accepted more than 2 s before the crash is delivered or held
        accepted = dict(sender.accepted)
        early = [s for s, at in accepted.items() if at < crashed - 2]
        assert len(early) > 100
        assert not unaccounted(early, chaos, r)
        # ...and the same worker delivers them, by itself, within 30 s of Redis' return
        try:
            tally = wait_settled(early, chaos, r, 30 - (time.monotonic() - back), "the early ones")
        except AssertionError as exc:
            # (failed once, unexplained, in CI: docs/reliability.md, "Open"; show where they sat)
            missing = set(early) - chaos.delivered_seqs()
            raise AssertionError(
                f"{exc}\nstill held in Redis: {sorted(held_seqs(r) & set(early))[:20]}\n"
                f"where: {where_held(r, missing)[:20]}\n"
                f"--- the worker's output ---\n{worker.text()[-20000:]}"
            ) from None
        recovered = time.monotonic() - back
        # ...and so does every event accepted after Redis came back; of those accepted in the
        # last second before it froze, everysec may lose what was not fsynced yet (on a
        # process crash the kernel still holds it, so expect none): lost, if at all, only
        # from that window
        everything = settle(accepted, chaos, r, 20)
    assert (tally.delivered, tally.dead_lettered) == (len(early), 0), tally
    window = {s for s, at in accepted.items() if frozen - EVERYSEC_WINDOW <= at < back}
    assert everything.dead_lettered == 0, everything
    assert everything.missing <= window, sorted(everything.missing - window)[:20]
    record(
        "5b Redis hung 1 s then SIGKILLed (AOF everysec)",
        accepted=len(accepted),
        messages_queued_when_redis_froze=backlog,
        accepted_more_than_2s_before_the_crash=len(early),
        refused_while_down=len(sender.refused),
        refused_but_delivered_anyway=len(set(sender.refused) & chaos.delivered_seqs()),
        seconds_from_redis_back_to_early_ones_delivered=round(recovered, 2),
        delivered=everything.delivered,
        accepted_in_the_everysec_window=len(window),
        lost=len(everything.missing),
        duplicates=everything.duplicates,
    )


def settle(seqs: Iterable[int], receiver: ChaosReceiver, r: redis.Redis, timeout: float) -> Tally:
    """Wait up to ``timeout`` for the events to settle, and count them either way."""
    wanted = list(seqs)
    deadline = time.monotonic() + timeout
    while not all_settled(wanted, receiver, r) and time.monotonic() < deadline:
        time.sleep(0.1)
    return Tally.of(wanted, receiver, r)


def test_workers_resume_by_themselves_within_30_s_of_a_redis_restart(
    server: RedisServer, producer_of: Producer, chaos: ChaosReceiver
) -> None:
    """Every thread mid-POST when Redis restarts: the worker consumes again within 30 s."""
    # Given a worker whose 4 threads each wait on a POST
    r = server.client()
    release = threading.Event()

    def script(_: Received) -> Action:
        release.wait(30)
        return Answer()

    chaos.script = script
    env = worker_env(server.url, chaos.url, LIMECHAT_WORKER_CONCURRENCY="4")
    send_numbered(producer_of, range(100))
    with running_worker(env):
        wait_for(lambda: chaos.in_progress == 4, 30, "four POSTs in flight")
        # When Redis is restarted (down 2 s) before the answers come back
        server.stop()
        release.set()
        time.sleep(2)  # the outage itself
        server.start()
        back = time.monotonic()
        send_numbered(producer_of, range(100, 110))
        # Then the worker, by itself, delivers what was sent after the restart within 30 s
        wait_settled(range(100, 110), chaos, r, 30, "events sent after the restart")
        resumed = time.monotonic() - back
        tally = wait_settled(range(110), chaos, r, 60, "every event")
    assert (tally.delivered, tally.dead_lettered) == (110, 0), tally
    record(
        "5c worker resumes after a Redis restart",
        seconds_from_redis_back_to_new_events_delivered=round(resumed, 2),
        delivered=tally.delivered,
        duplicates=tally.duplicates,
    )
