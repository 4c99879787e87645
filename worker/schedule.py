"""Parked retries: a sorted set by due time, promoted back to the queue by every worker.

Parking in Redis instead of Celery's countdown/ETA keeps waiting events out of worker memory
(ETA tasks are prefetched and held, and run twice when the delay outlives the visibility
timeout: celery#2599, kombu#337). Promotion is crash-safe: a scheduler *claims* due entries,
then pushes their messages and drops the claim in one atomic step; a claim left behind by a
process that died in between is put back on the schedule after the claim timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

import redis

from producer import contract, wire
from producer.envelope import Event

from .requeue import Requeuer
from .stats import redis_now

log = logging.getLogger("limechat_events.schedule")

# KEYS[1]: due sorted set   KEYS[2]: payload hash
# ARGV[1]: event id   ARGV[2]: delay in seconds   ARGV[3]: event envelope (JSON)
# Due time comes from Redis' clock, so hosts with skewed clocks agree on it.
_PARK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS[1]: due sorted set   KEYS[2]: claimed sorted set   KEYS[3]: payload hash
# ARGV[1]: how many to claim   ARGV[2]: seconds after which a claim is considered abandoned
# Returns {ids, payloads} of the entries now claimed by the caller.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]),
                         'LIMIT', 0, 1000)
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], now, id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then return {{}, {}} end
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], now, id)
end
return {ids, redis.call('HMGET', KEYS[3], unpack(ids))}
"""

#: Most entries one claim takes (bounded: Lua's unpack has a stack limit).
CLAIM_LIMIT = 500


class RetrySchedule:
    """Parks events until their due time and puts them back on the queue after it."""

    def __init__(self, client: redis.Redis, *, batch_size: int, claim_timeout: float) -> None:
        self._park = client.register_script(_PARK)
        self._claim = client.register_script(_CLAIM)
        self._requeue = Requeuer(client, contract.RETRY_CLAIMED, contract.RETRY_EVENTS)
        self.batch_size = batch_size
        self.claim_timeout = claim_timeout

    def park(
        self, event: Event, delay: float, *, client: redis.client.Pipeline | None = None
    ) -> None:
        """Schedule ``event`` (with its attempt count) to be queued again in ``delay`` seconds.

        With ``client`` a pipeline, the call joins it (and runs when the caller executes it).
        """
        self._park(
            keys=[contract.RETRY_DUE, contract.RETRY_EVENTS],
            args=[event["id"], repr(max(delay, 0.0)), json.dumps(event, ensure_ascii=False)],
            client=client,
        )

    def promote_due(self, limit: int = CLAIM_LIMIT) -> int:
        """Move up to ``limit`` due events to the queue in batch messages; returns how many."""
        ids, payloads = self._claim(
            keys=[contract.RETRY_DUE, contract.RETRY_CLAIMED, contract.RETRY_EVENTS],
            args=[limit, self.claim_timeout],
        )
        if not ids:
            return 0
        events: list[Event] = []
        for raw_id, payload in zip(ids, payloads, strict=False):
            if payload is None:
                log.error("parked retry %s has no payload; dropping its schedule entry", raw_id)
                continue
            events.append(json.loads(payload))
        messages = wire.encode_batches(events, self.batch_size)
        id_list = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        if not self._requeue(id_list, messages):
            log.warning("lost a claim on %d parked retries to another scheduler", len(ids))
            return 0
        return len(events)


class Promoter(threading.Thread):
    """The scheduler loop every worker runs: promote what is due, then sleep a little.

    ``chores`` are (interval, function) pairs run from the same loop, at most that often:
    the worker's heartbeat, the DLQ retention limits.
    """

    def __init__(
        self,
        schedule: RetrySchedule,
        interval: float,
        chores: Sequence[tuple[float, Callable[[], object]]] = (),
    ) -> None:
        super().__init__(name="limechat-scheduler", daemon=True)
        self.schedule = schedule
        self.interval = interval
        self._chores = [(every, chore, [0.0]) for every, chore in chores]
        self._stop_event = threading.Event()
        self._failing = False

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                # Drain everything due before sleeping: after an outage many come due at once.
                while self.schedule.promote_due() == CLAIM_LIMIT:
                    if self._stop_event.is_set():
                        return
                self._run_chores()
                if self._failing:
                    log.info("scheduler reconnected to Redis")
                    self._failing = False
            except redis.RedisError as exc:
                if not self._failing:
                    log.warning("scheduler cannot reach Redis (%s); will keep trying", exc)
                    self._failing = True
            self._stop_event.wait(self.interval)

    def _run_chores(self) -> None:
        now = time.monotonic()
        for every, chore, last in self._chores:
            if now - last[0] >= every:
                last[0] = now
                chore()


def parked(client: redis.Redis, limit: int) -> list[dict[str, object]]:
    """The first ``limit`` parked events, soonest first, with when and why (for the CLI)."""
    now = redis_now(client)
    due = cast(
        "list[tuple[bytes, float]]",
        client.zrange(contract.RETRY_DUE, 0, limit - 1, withscores=True),
    )
    if not due:
        return []
    payloads = client.hmget(contract.RETRY_EVENTS, [i for i, _ in due])
    out: list[dict[str, object]] = []
    for (raw_id, score), payload in zip(due, payloads, strict=True):
        event = json.loads(payload) if payload else {}
        history = event.get("history") or []
        if "slot_at" in event:
            why = "waiting for its rate-limit slot"
        elif history:
            last = history[-1]
            why = f"status {last['status']}" if last.get("status") else last.get("error", "")
        else:
            why = "handed back by a worker (shutdown or long batch)"
        out.append(
            {
                "event_id": raw_id.decode(),
                "event": event.get("event"),
                "attempts": event.get("attempts", 0),
                "due_in_seconds": round(score - now, 3),
                "why": why,
            }
        )
    return out
