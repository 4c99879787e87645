"""Taking lists (worker/taking.py) on the real Redis: what a dead worker was taking comes back."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from redis.client import Pipeline

from producer import contract, wire
from worker import taking

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def message(seq: int) -> bytes:
    return wire.encode_message([{"id": f"e{seq}", "data": {"seq": seq}}]).encode()


def list_of(channel: str) -> str:
    return contract.taking_key(contract.QUEUE, channel)


def flags(raw: bytes) -> tuple[Any, Any]:
    m = json.loads(raw)
    return m["headers"].get("redelivered"), m["properties"]["delivery_info"].get("redelivered")


def test_the_taking_list_names_its_queue() -> None:
    assert contract.taking_source(list_of("abc")) == contract.QUEUE


def test_recover_puts_messages_back_oldest_first_marked_redelivered(r: redis.Redis) -> None:
    key = list_of("dead")
    first, second, waiting = message(1), message(2), message(3)
    taking.register(r, key)
    r.lpush(key, first)  # BLMOVE ... RIGHT LEFT: the newest is leftmost
    r.lpush(key, second)
    r.lpush(contract.QUEUE, waiting)

    assert taking.recover(r, key, forget=True) == 2

    assert not r.exists(key) and r.zscore(contract.TAKING, key) is None
    # the queue is taken from the right: the recovered ones come first, oldest first
    order = [r.rpop(contract.QUEUE) for _ in range(3)]
    assert [json.loads(m)["headers"]["id"] for m in order if m] == [
        json.loads(m)["headers"]["id"] for m in (first, second, waiting)
    ]
    assert [flags(m) for m in order if m] == [(True, True), (True, True), (None, None)]


def test_junk_in_a_taking_list_goes_back_as_it_was(r: redis.Redis) -> None:
    key = list_of("dead")
    r.lpush(key, b"\xff not json", b'{"headers": 1}')
    assert taking.recover(r, key, forget=False) == 2
    assert sorted(r.lrange(contract.QUEUE, 0, -1)) == sorted([b"\xff not json", b'{"headers": 1}'])


class InterruptedPipeline(Pipeline):
    """A pipeline during whose WATCH the list's own worker takes the message off it."""

    def lrange(self, name: Any, start: int, end: int) -> Any:  # type: ignore[override]
        items = super().lrange(name, start, end)
        redis.Redis(connection_pool=self.connection_pool).lpop(name)
        return items


class Interrupting(redis.Redis):
    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return InterruptedPipeline(self.connection_pool, self.response_callbacks, transaction, None)


def test_a_list_that_changed_while_recovering_is_left_to_its_worker(
    r: redis.Redis, redis_url: str
) -> None:
    key = list_of("slow")
    r.lpush(key, message(1))
    racing = Interrupting.from_url(redis_url)
    try:
        assert taking.recover(racing, key, forget=True) == 0
    finally:
        racing.close()
    # the worker took it (and recorded it); nothing was pushed back twice
    assert r.llen(contract.QUEUE) == 0 and r.llen(key) == 0


def test_sweep_recovers_stale_lists_and_own_leftovers_and_keeps_live_ones(
    r: redis.Redis,
) -> None:
    dead, alive, mine = list_of("dead"), list_of("alive"), list_of("mine")
    now = taking.redis_now(r)
    r.zadd(contract.TAKING, {dead: now - 100, alive: now - 1})
    for key, seq in ((dead, 1), (alive, 2), (mine, 3)):
        r.lpush(key, message(seq))

    # a channel that is not taking anything now: its leftover will never be recorded
    assert taking.sweep(r, mine=[mine], idle=[mine], max_age=30) == (2, [])

    assert r.llen(contract.QUEUE) == 2 and r.llen(alive) == 1
    registered = {k.decode() for k in r.zrange(contract.TAKING, 0, -1)}
    assert registered == {alive, mine}  # the dead list is forgotten, ours refreshed
    assert (r.zscore(contract.TAKING, mine) or 0) >= now


def test_sweep_leaves_its_own_list_alone_while_a_move_is_in_flight(r: redis.Redis) -> None:
    mine, empty = list_of("mine"), list_of("mine-too")
    r.lpush(mine, message(1))  # moved by a BLMOVE whose reply is being read
    # (and named, so that its channel puts back what remains before its next take)
    assert taking.sweep(r, mine=[mine, empty], idle=[], max_age=30) == (0, [mine])
    assert r.llen(mine) == 1 and r.llen(contract.QUEUE) == 0
