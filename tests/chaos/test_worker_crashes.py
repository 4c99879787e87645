"""Scenarios 2, 3, 4, 7 and 8: workers killed or stopped mid-work lose nothing.

Real worker processes, killed with SIGKILL of their whole process group (no chance to
acknowledge or clean up) or stopped with SIGTERM, against the real Redis and a real receiver.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import cast

import pytest
import redis

from producer import Producer, ProducerSettings, contract
from producer.api import prepare_events
from tests.helpers import WorkerProcess, running_worker, wait_for, worker_env
from worker import markers
from worker.stats import snapshot

from .figures import record
from .hang_before_publish import CLAIMED
from .receiver import Action, Answer, ChaosReceiver, Received, Stall
from .redis_server import RedisServer
from .support import (
    items,
    nothing_held,
    queued_events,
    send_numbered,
    taking_events,
    unacked_events,
    wait_settled,
)

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def taken_since(r: redis.Redis, since: float) -> set[bytes]:
    """Delivery tags of the unacknowledged messages taken since ``since`` (epoch seconds)."""
    return set(cast("list[bytes]", r.zrangebyscore(contract.UNACKED_INDEX, since, "+inf")))


def test_sigkill_of_the_worker_three_times_with_1000_events_in_flight_loses_nothing(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """Killed three times mid-run: all 1,000 delivered; duplicates within what was in flight."""
    # Given 1,000 queued events and a receiver taking 10 ms per request (so that each
    # thread always has a POST in flight)
    events, kills, concurrency = 1000, 3, 4
    chaos.latency = 0.01
    env = worker_env(redis_url, chaos.url, LIMECHAT_WORKER_CONCURRENCY=str(concurrency))
    seqs = range(events)
    send_numbered(producer, seqs)
    in_flight: list[int] = []
    started = time.monotonic()
    # When a worker is SIGKILLed after every 150 more deliveries, three times over
    for _ in range(kills):
        since = time.time()
        worker = WorkerProcess(env).start()
        target = len(chaos.delivered_seqs()) + 150

        def progressed(target: int = target) -> bool:
            return len(chaos.delivered_seqs()) >= target

        try:
            wait_for(progressed, 60, "150 more deliveries")
        finally:
            worker.kill()  # at whatever moment: between taking and recording a message too
        # what the killed worker held: the messages it took, left in kombu's unacked hash,
        # and any it was taking (in its taking list)
        mine = taken_since(r, since)
        assert mine, "the worker was killed while holding messages"
        in_flight.append(unacked_events(r, mine) + taking_events(r))
    killed_at = time.monotonic()
    # Then a fresh worker delivers every event
    with running_worker(env):
        tally = wait_settled(seqs, chaos, r, 90, "every event after the restart")
        # (what the killed workers held and had delivered comes back after the visibility
        # timeout, to be acknowledged as already delivered)
        wait_for(lambda: nothing_held(r), 30, "the killed workers' messages to be settled")
    recovered = time.monotonic() - killed_at
    assert (tally.delivered, tally.dead_lettered) == (events, 0)
    # Duplicates only among the events in flight (those in the messages each killed worker
    # held: kombu's unacked entries, counted at each kill)
    assert tally.duplicates <= sum(in_flight), (tally, in_flight)
    record(
        "2 SIGKILL x3",
        events=events,
        kills=kills,
        events_held_at_each_kill=in_flight,
        delivered=tally.delivered,
        duplicates=tally.duplicates,
        dead_lettered=tally.dead_lettered,
        seconds_from_last_kill_to_all_delivered=round(recovered, 2),
        seconds_total=round(time.monotonic() - started, 2),
    )


def test_sigterm_mid_run_finishes_what_is_in_flight_and_exits_in_time(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """SIGTERM: POSTs in flight finish or time out, the rest goes back; exit within the timeout."""
    # Given 400 events, a receiver taking 10 ms per request, and, until the SIGTERM, every
    # 50th event's first request stalling far past LIMECHAT_TIMEOUT_SECONDS (2 s here)
    events, timeout, stall = 400, 2.0, 30.0
    chaos.latency = 0.01
    stalls: dict[int, float] = {}
    stalling = threading.Event()
    stalling.set()

    def script(req: Received) -> Action:
        if stalling.is_set() and req.seq % 50 == 0 and req.seq not in stalls:
            stalls[req.seq] = time.monotonic()
            return Stall(stall)
        return Answer()

    def a_stall_in_flight() -> bool:
        return any(time.monotonic() - at < timeout / 2 for at in list(stalls.values()))

    chaos.script = script
    # (a long visibility timeout: nothing may come back through kombu's sweep in this test)
    env = worker_env(
        redis_url,
        chaos.url,
        LIMECHAT_TIMEOUT_SECONDS=str(timeout),
        LIMECHAT_VISIBILITY_TIMEOUT="60",
    )
    seqs = range(events)
    send_numbered(producer, seqs)
    worker = WorkerProcess(env).start()
    try:
        wait_for(
            lambda: len(chaos.delivered_seqs()) >= 100 and a_stall_in_flight(),
            60,
            "work under way, with a stalled POST among it",
        )
        # When the worker is told to stop
        signalled = time.monotonic()
        code = worker.terminate(timeout=60)
        took = time.monotonic() - signalled
        stalling.clear()
    finally:
        worker.stop()
    # Then it exits cleanly, within one HTTP timeout plus the shutdown itself: the bound is
    # the promise; half the stall is far above what a busy machine adds, and below waiting
    # the stalled POST out
    assert code == 0, worker.text()[-3000:]
    assert took < stall / 2, took
    assert worker.saw("shutting down:")
    # ...holding nothing: every event is delivered, queued, or parked for a retry
    delivered = chaos.delivered_seqs()
    assert r.hlen(contract.UNACKED) == 0
    assert len(delivered) + queued_events(r) + r.hlen(contract.RETRY_EVENTS) == events
    # And the next worker delivers the rest, none twice
    with running_worker(env):
        tally = wait_settled(seqs, chaos, r, 90, "every event after the restart")
    assert (tally.delivered, tally.dead_lettered, tally.duplicates) == (events, 0, 0), tally
    record(
        "3 SIGTERM",
        events=events,
        delivered_before_sigterm=len(delivered),
        seconds_from_sigterm_to_exit=round(took, 2),
        http_timeout=timeout,
        delivered=tally.delivered,
        duplicates=tally.duplicates,
        dead_lettered=tally.dead_lettered,
    )


def test_sigkill_between_claiming_parked_retries_and_publishing_them_loses_nothing(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """The promoting process dies after its claim, before its publish: the claim is re-promoted."""
    # Given 200 events whose first attempt gets a 503, and a worker whose scheduler freezes
    # right after it has claimed due retries (tests/chaos/hang_before_publish.py)
    events, visibility = 200, 3.0
    first_attempts: set[int] = set()
    lock = threading.Lock()

    def script(req: Received) -> Action:
        with lock:
            if req.seq not in first_attempts:
                first_attempts.add(req.seq)
                return Answer(503, {"error": "try again"})
        return Answer()

    chaos.script = script
    env = worker_env(redis_url, chaos.url, LIMECHAT_VISIBILITY_TIMEOUT=str(visibility))
    seqs = range(events)
    send_numbered(producer, seqs)
    hung = WorkerProcess(env, ["-m", "tests.chaos.hang_before_publish"]).start()
    try:
        wait_for(lambda: hung.saw(CLAIMED), 30, "the scheduler to claim parked retries")
        # (every first attempt made and its message acknowledged: nothing else is in flight)
        wait_for(
            lambda: (
                len(first_attempts) == events
                and r.llen(contract.QUEUE) == 0
                and r.hlen(contract.UNACKED) == 0
            ),
            30,
            "every event parked",
        )
    finally:
        # When that process is SIGKILLed with the claim in its hands
        hung.kill()
    stranded = r.zcard(contract.RETRY_CLAIMED)
    parked = r.hlen(contract.RETRY_EVENTS)
    assert stranded > 0 and parked == events
    assert not chaos.delivered_seqs()
    killed_at = time.monotonic()
    # Then a fresh worker delivers every event, the claimed ones after the claim timeout
    with running_worker(env):
        tally = wait_settled(seqs, chaos, r, 60, "every event after the restart")
    recovered = time.monotonic() - killed_at
    assert (tally.delivered, tally.dead_lettered, tally.duplicates) == (events, 0, 0), tally
    assert r.zcard(contract.RETRY_CLAIMED) == 0 and r.hlen(contract.RETRY_EVENTS) == 0
    assert r.zcard(contract.RETRY_DUE) == 0
    record(
        "4 SIGKILL between claim and publish",
        events=events,
        claimed_when_killed=stranded,
        parked_when_killed=parked,
        delivered=tally.delivered,
        duplicates=tally.duplicates,
        dead_lettered=tally.dead_lettered,
        claim_timeout=visibility,
        seconds_from_kill_to_all_delivered=round(recovered, 2),
    )


def test_events_limechat_accepted_before_a_crash_are_not_sent_again(
    chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """The delivered marker: a redelivered batch skips every event whose marker was written."""
    # Given one message of 6 events: the first 5 answered 200 in 150 ms each (so the worker
    # writes markers during the batch, at least every 0.5 s), the last one stalling
    events, stalled = 6, 5
    chaos.latency = 0.15
    stall = threading.Event()
    stall.set()

    def script(req: Received) -> Action:
        return Stall(60) if req.seq == stalled and stall.is_set() else Answer()

    chaos.script = script
    # (a batch may run for half the visibility timeout before handing its rest to the
    # scheduler: 2.5 s here, ample for the 5 answers and the start of the stalled POST)
    env = worker_env(redis_url, chaos.url, LIMECHAT_VISIBILITY_TIMEOUT="5")
    producer = Producer(ProducerSettings(redis_url=redis_url, batch_size=50))
    ids = dict(enumerate(producer.send_events(items(range(events)))))
    producer.close()
    worker = WorkerProcess(env).start()
    try:
        wait_for(
            lambda: any(q.seq == stalled and q.outcome == "stall" for q in chaos.snapshot()),
            30,
            "the last POST, stalled",
        )
        wait_for(lambda: markers.is_delivered(r, ids[0]), 10, "markers written")
    finally:
        # When the worker dies after LimeChat accepted the others, before the message was
        # acknowledged
        worker.kill()
    assert not worker.saw("batch ran long"), "the stalled POST was not in the original batch"
    assert r.hlen(contract.UNACKED) == 1
    marked = {seq for seq, i in ids.items() if markers.is_delivered(r, i)}
    accepted = chaos.delivered_seqs()
    assert marked and marked <= accepted and stalled not in accepted
    stall.clear()
    killed_at = time.monotonic()
    # Then the message comes back after the visibility timeout, and the worker skips every
    # event with a marker; only those accepted since the last marker write go out again
    with running_worker(env) as again:
        wait_settled(range(events), chaos, r, 30, "the redelivered batch")
        # (counted, not matched by id: the log's phone masking garbles some event ids, see
        # test_secrets.py)
        wait_for(lambda: again.text().count("skipped evt=") == len(marked), 10, "a skip per marker")
    recovered = time.monotonic() - killed_at
    deliveries = chaos.deliveries()
    assert all(deliveries[seq] == 1 for seq in marked), deliveries
    duplicates = sum(n - 1 for n in deliveries.values())
    assert duplicates == len(accepted - marked), (deliveries, marked)
    # ...and a marker lasts at least the documented window (worker/markers.py), at most that
    # and the rest of its hour's bucket
    ttl = markers.expires_in(r, ids[0])
    window = contract.DELIVERED_MARKER_WINDOW_SECONDS
    assert ttl is not None
    assert window - 120 < ttl <= window + contract.DELIVERED_BUCKET_SECONDS + 1
    record(
        "7 delivered marker",
        events=events,
        accepted_before_the_kill=len(accepted),
        marked_before_the_kill=len(marked),
        duplicates=duplicates,
        marker_ttl_seconds=ttl,
        seconds_from_kill_to_redelivery=round(recovered, 2),
    )


def test_an_event_held_by_a_killed_worker_comes_back_after_the_visibility_timeout(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """Redelivered after LIMECHAT_VISIBILITY_TIMEOUT (3 s here): not sooner, not after an hour."""
    visibility = 3.0
    stall = threading.Event()
    stall.set()

    def script(req: Received) -> Action:
        return Stall(60) if stall.is_set() else Answer()

    chaos.script = script
    env = worker_env(redis_url, chaos.url, LIMECHAT_VISIBILITY_TIMEOUT=str(visibility))
    producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
    # Given a worker holding the event (its POST in flight)
    worker = WorkerProcess(env).start()
    try:
        wait_for(lambda: chaos.in_progress, 30, "the POST in flight")
        [(_, taken_at)] = cast(
            "list[tuple[bytes, float]]",
            r.zrange(contract.UNACKED_INDEX, 0, -1, withscores=True),
        )
    finally:
        # When it is SIGKILLed and another worker starts at once
        worker.kill()
    stall.clear()
    with running_worker(env):
        wait_settled([0], chaos, r, 60, "the redelivery")
    # Then the event came back once the message had been held for the visibility timeout
    redelivered = [req for req in chaos.snapshot() if req.delivered]
    assert len(redelivered) == 1
    held = time.time() - (time.monotonic() - redelivered[0].at) - taken_at
    assert held >= visibility - 0.5, held
    # (kombu's sweep runs every max(1, min(10, timeout / 3)) s; the rest is slack for a busy box)
    assert held < visibility + 1 + 15, held
    record(
        "8 visibility timeout",
        events=1,
        visibility_timeout=visibility,
        seconds_held_before_redelivery=round(held, 2),
        delivered=1,
        duplicates=0,
    )


def blocked_taking(r: redis.Redis) -> bool:
    """Whether a client is waiting in a blocking pop (BRPOP, or a BLMOVE) right now."""
    return any(
        c.get("cmd") in ("brpop", "blmove", "brpoplpush") and "b" in c.get("flags", "")
        for c in r.client_list()
    )


def test_a_message_redis_handed_to_a_worker_killed_before_it_recorded_it_is_not_lost(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver
) -> None:
    """SIGKILL after Redis handed the worker a message, before kombu wrote its unacked entry.

    Stock kombu takes the message with BRPOP and loses it here; ours moves it into the
    worker's taking list, from which another worker puts it back after the visibility timeout.
    """
    # (a Redis of its own: the only blocked client on it is this test's worker)
    server = own_redis(appendonly=False)
    r = server.client()
    producer = Producer(ProducerSettings(redis_url=server.url))
    env = worker_env(server.url, chaos.url, LIMECHAT_VISIBILITY_TIMEOUT="2")
    worker = WorkerProcess(env).start()
    try:
        # Given an idle worker, frozen (SIGSTOP) while its blocking pop waits on the empty queue
        assert worker.proc is not None
        for _ in range(50):
            os.killpg(worker.proc.pid, signal.SIGSTOP)
            if blocked_taking(r):
                break
            os.killpg(worker.proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        else:
            pytest.fail("never caught the worker waiting in its blocking pop")
        # When an event is sent: Redis pops it into the frozen worker's socket at once
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        try:
            wait_for(lambda: r.llen(contract.QUEUE) == 0, 5, "Redis to hand the message over")
        except AssertionError as exc:
            pytest.fail(str(exc))
        if r.hlen(contract.UNACKED):
            pytest.fail("the message was recorded as unacknowledged: the window was missed")
        assert taking_events(r) == 1, "the message is in the frozen worker's taking list"
        queue = snapshot(r, None, None)["queue"]
        assert (queue["waiting"], queue["in_flight"]) == (0, 1)  # stats sees it
        (frozen_list,) = r.zrange(contract.TAKING, 0, -1)
    finally:
        # ...and the worker is SIGKILLed before it reads it
        worker.kill()
        producer.close()
    # Then another worker delivers the event after the visibility timeout, once
    with running_worker(env):
        tally = wait_settled([0], chaos, r, 10, "the event taken by the killed worker")
        wait_for(lambda: nothing_held(r), 10, "the taking list to be put back and emptied")
    assert (tally.delivered, tally.duplicates) == (1, 0)
    assert frozen_list not in r.zrange(contract.TAKING, 0, -1), "the dead list is forgotten"
    r.close()


def test_a_message_left_in_a_live_idle_workers_own_taking_list_is_put_back_within_seconds(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """A take whose reply was lost leaves its message in the list of a worker that lives on.

    (kombu drops a blocking pop's connection without a word when its reply is overdue, or when
    Redis closes it while the worker has no credit: the channel reconnects and goes on.) The
    worker's sweep refreshes its own list and, before the fix, left it alone whenever the
    blocking pop was waiting, which for an idle worker is nearly always: the message stayed
    there, held and never delivered, for as long as the worker idled (over 40 s measured).
    """
    # Given an idle worker, waiting in its blocking pop on the empty queue
    env = worker_env(redis_url, chaos.url)
    with running_worker(env):
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        wait_settled([0], chaos, r, 30, "the first event")
        (own_list,) = cast("list[bytes]", r.zrange(contract.TAKING, 0, -1))
        wait_for(lambda: blocked_taking(r), 10, "the worker to wait in its blocking pop")
        # When a message sits in its own taking list, as a take whose reply was lost leaves it
        _, (message,) = prepare_events(items([1]), batch_size=50)
        r.lpush(own_list, message)
        # Then it goes back to the queue and is delivered within seconds, by the same worker
        # (sweeps every max(1, min(10, timeout / 3)) s, then the put-back before its next pop)
        started = time.monotonic()
        tally = wait_settled([1], chaos, r, 8, "the message left in the taking list")
        delivered_after = time.monotonic() - started
        assert (tally.delivered, tally.duplicates) == (1, 0)
        wait_for(lambda: nothing_held(r), 5, "its taking list to be emptied")
    record(
        "2b message left in a live worker's taking list",
        seconds_to_delivery=round(delivered_after, 2),
    )
