"""Coalescing (worker/coalesce.py): single-event messages waiting behind the one taken are
delivered with it as one batch, each event once, and nothing is lost if the worker dies between
moving them and recording them."""

from __future__ import annotations

import collections

import pytest
import redis

from producer import Producer, ProducerSettings, contract
from tests.helpers import WorkerProcess, running_worker, wait_for
from worker import markers
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def numbers(receiver: Sandbox) -> collections.Counter[int]:
    return collections.Counter(req.body["data"]["n"] for req in receiver.accepted())


def taken_lists_size(r: redis.Redis) -> int:
    return sum(r.llen(k) for k in r.zrange(contract.TAKING, 0, -1))


def test_waiting_single_events_travel_together_each_delivered_once(
    producer: Producer, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    # Given 60 events sent one by one while no worker runs
    ids = [producer.send_event("order_placed", phone=PHONE, data={"n": n}) for n in range(60)]
    # When a worker with 2 threads and batches of 10 takes them
    with running_worker(
        {**env, "LIMECHAT_WORKER_CONCURRENCY": "2", "LIMECHAT_BATCH_SIZE": "10"}
    ) as w:
        wait_for(lambda: len(receiver.accepted()) >= 60, 30, "every event delivered")
        wait_for(lambda: r.hlen(contract.UNACKED) == 0, 10, "every message acknowledged")
        # Then they went in shared deliveries of at most 10, each event exactly once
        assert w.saw("coalesced: ")
        sizes = [int(line.split("coalesced: ")[1].split()[0]) for line in w.text().splitlines()
                 if "coalesced: " in line]  # fmt: skip
        assert max(sizes) <= 10 and sum(s - 1 for s in sizes) > 0
    assert numbers(receiver) == collections.Counter(range(60))
    assert r.llen(contract.QUEUE) == 0 and taken_lists_size(r) == 0
    assert all(markers.is_delivered(r, i) for i in ids)
    assert int(r.hget(contract.STATS_COUNTERS, "delivered") or 0) == 60


def test_batches_that_do_not_fit_go_back_in_order_and_are_delivered(
    redis_url: str, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    # Given singles, then batch messages of 4 events, then singles, with a batch size of 5
    producer = Producer(ProducerSettings(redis_url=redis_url, batch_size=4))
    try:
        for n in range(3):
            producer.send_event("order_placed", phone=PHONE, data={"n": n})
        producer.send_events(
            [{"phone": PHONE, "event": "order_placed", "data": {"n": n}} for n in range(3, 11)]
        )
        for n in range(11, 14):
            producer.send_event("order_placed", phone=PHONE, data={"n": n})
    finally:
        producer.close()
    # When a worker with one thread takes them
    with running_worker({**env, "LIMECHAT_WORKER_CONCURRENCY": "1", "LIMECHAT_BATCH_SIZE": "5"}):
        wait_for(lambda: len(receiver.accepted()) >= 14, 30, "every event delivered")
        wait_for(lambda: r.hlen(contract.UNACKED) == 0, 10, "every message acknowledged")
    # Then every event arrived once, oldest first (one thread: in queue order)
    order = [req.body["data"]["n"] for req in receiver.accepted()]
    assert order == list(range(14))
    assert r.llen(contract.QUEUE) == 0 and taken_lists_size(r) == 0


def test_a_worker_killed_after_moving_waiting_messages_loses_none(
    producer: Producer, receiver: Sandbox, env: dict[str, str], r: redis.Redis
) -> None:
    # Given 30 events waiting
    for n in range(30):
        producer.send_event("order_placed", phone=PHONE, data={"n": n})
    # When a worker is SIGKILLed right after moving some behind the one it took, unrecorded
    killed = WorkerProcess(env, ["-m", "tests.integration.kill_after_move"]).start(wait_ready=False)
    try:
        assert killed.wait_exit(30) != 0
    finally:
        killed.stop()
    assert killed.saw("killed after moving")
    assert receiver.accepted() == []
    # Then every event is still in Redis: on the queue or in the dead worker's taking list
    assert r.llen(contract.QUEUE) + taken_lists_size(r) == 30
    assert r.hlen(contract.UNACKED) == 0
    # ...and the next worker delivers each once, after the visibility timeout
    with running_worker(env):
        wait_for(lambda: len(receiver.accepted()) >= 30, 40, "every event delivered")
        wait_for(lambda: taken_lists_size(r) == 0, 10, "the taking list emptied")
    assert numbers(receiver) == collections.Counter(range(30))
