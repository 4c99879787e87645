"""Coalescing (worker/coalesce.py) at its edges, from a hostile review of issue 12: poison of
every kind among coalesced single events costs no good one; two copies of one event merged
into one batch go out once; a LIMECHAT_BATCH_SIZE past Lua's unpack() limit does not kill the
worker."""

from __future__ import annotations

import uuid

import pytest
import redis

from producer import contract, wire
from producer.envelope import new_event
from tests.helpers import WorkerProcess, wait_for, worker_env
from worker.deadletter import DeadLetters

from . import test_foreign_messages as foreign
from . import test_malformed_messages as malformed
from . import test_poison as poison
from .receiver import ChaosReceiver
from .support import PHONE

pytestmark = pytest.mark.integration


def good(seq: str, account: str | None = None) -> bytes:
    event = new_event("order_placed", PHONE, PHONE, {"seq": seq}, None)
    if account is not None:
        event["account"] = account  # type: ignore[typeddict-unknown-key]
    return wire.encode_message([event]).encode()


def poison_items() -> list[tuple[str, bytes, int, set[str]]]:
    """(name, item, dead letters it makes, good seqs it carries)."""
    items: list[tuple[str, bytes, int, set[str]]] = []
    for kind in poison.BAD_KINDS:
        text, _ = poison._bad_event(kind, str(uuid.uuid4()))
        items.append((f"poison event {kind}", poison.batch([text]), 1, set()))
    items.append(("deep junk", poison.deep(100_000).encode(), 1, set()))
    items.append(("binary junk", b"\xff\xfe\x00junk", 1, set()))
    for name, raw in malformed.HANDLED.items():
        items.append((f"malformed {name}", raw, 1, set()))
    for name, change in foreign.REWRITTEN.items():
        seq = f"rewritten-{name}"
        items.append((f"foreign {name}", foreign.carrying(seq, change), 0, {seq}))
    for name, change in foreign.UNREADABLE.items():
        items.append((f"unreadable {name}", foreign.carrying(f"x-{name}", change), 1, set()))
    return items


@pytest.mark.parametrize("batch_size", ["50"])
def test_poison_among_coalesced_singles_costs_no_good_event(
    redis_url: str, r: redis.Redis, chaos: ChaosReceiver, batch_size: str
) -> None:
    goods: set[str] = set()
    dead = 0
    n = 0
    for _name, raw, dead_n, carried in poison_items():
        for _ in range(2):
            seq = f"good-{n}"
            n += 1
            r.lpush(contract.QUEUE, good(seq))
            goods.add(seq)
        r.lpush(contract.QUEUE, raw)
        dead += dead_n
        goods |= carried
    for _ in range(3):
        seq = f"good-{n}"
        n += 1
        r.lpush(contract.QUEUE, good(seq))
        goods.add(seq)
    env = worker_env(
        redis_url, chaos.url, LIMECHAT_BATCH_SIZE=batch_size, LIMECHAT_WORKER_CONCURRENCY="2"
    )
    worker = WorkerProcess(env).start()
    try:

        def settled() -> bool:
            assert worker.proc is not None and worker.proc.poll() is None, worker.text()[-3000:]
            return (
                goods <= chaos.delivered_seqs()
                and DeadLetters(r).count() >= dead
                and not r.llen(contract.QUEUE)
                and not r.hlen(contract.UNACKED)
            )

        try:
            wait_for(settled, 90, "every good event delivered and every bad one dead-lettered")
        finally:
            missing = goods - chaos.delivered_seqs()
            print("missing:", sorted(missing)[:20], len(missing))
            print("dead letters:", DeadLetters(r).count(), "expected", dead)
            print("coalesced lines:", worker.text().count("coalesced: "))
            print("could not coalesce:", worker.text().count("could not coalesce"))
        counts = chaos.deliveries()
        assert all(counts[s] == 1 for s in goods), {s: counts[s] for s in goods if counts[s] != 1}
        assert DeadLetters(r).count() == dead
        taking = sum(r.llen(k) for k in r.zrange(contract.TAKING, 0, -1))
        assert taking == 0
        assert "Unrecoverable error" not in worker.text()
        assert worker.text().count("coalesced: ") > 0
    finally:
        worker.stop()


def test_two_copies_of_one_event_waiting_together_are_delivered_once(
    redis_url: str, r: redis.Redis, chaos: ChaosReceiver
) -> None:
    """The outbox relay re-sends its rows as redelivered messages after it was killed between
    enqueue and commit (docs/outbox.md: the markers catch the re-send). With a backlog, both
    copies wait on the queue; one worker thread takes them one after the other."""
    event = new_event("order_placed", PHONE, PHONE, {"seq": "twin"}, None)
    copy = wire.encode_message([event], redelivered=True).encode()
    r.lpush(contract.QUEUE, copy)
    r.lpush(contract.QUEUE, good("other"))
    r.lpush(contract.QUEUE, copy)  # (the relay's second run)
    env = worker_env(redis_url, chaos.url, LIMECHAT_WORKER_CONCURRENCY="1")
    worker = WorkerProcess(env).start()
    try:
        wait_for(lambda: {"twin", "other"} <= chaos.delivered_seqs(), 30, "delivered")
        wait_for(lambda: not r.llen(contract.QUEUE) and not r.hlen(contract.UNACKED), 30, "settled")
        assert chaos.deliveries()["twin"] == 1, chaos.deliveries()
    finally:
        worker.stop()


def test_a_batch_size_above_luas_unpack_limit_does_not_kill_the_worker(
    redis_url: str, r: redis.Redis, chaos: ChaosReceiver
) -> None:
    """LIMECHAT_BATCH_SIZE has no upper bound; MOVE_MORE unpacks up to batch_size-1 items, and
    Lua's unpack() fails beyond about 8000 ('too many results to unpack')."""
    items = [good(f"big-{i}") for i in range(8100)]
    for i in range(0, len(items), 1000):
        r.lpush(contract.QUEUE, *items[i : i + 1000])
    env = worker_env(
        redis_url, chaos.url, LIMECHAT_BATCH_SIZE="9000", LIMECHAT_WORKER_CONCURRENCY="1"
    )
    worker = WorkerProcess(env).start(wait_ready=False)
    try:
        wait_for(lambda: len(chaos.delivered_seqs()) >= 100, 30, "deliveries under way")
    finally:
        assert worker.proc is not None
        alive = worker.proc.poll() is None
        worker.stop()
        assert alive, worker.text()[-1500:]
