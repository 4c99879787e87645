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
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

import redis

from producer import contract, wire
from producer.envelope import Event

from .requeue import Requeuer
from .stats import redis_now
from .vetting import envelope_problem, quarantine_carrier

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
#: Most parked entries ``retries list --account`` reads looking for that account's.
SCAN_LIMIT = 100_000


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
        """Move up to ``limit`` due events to the queue in batch messages; returns how many.

        The messages are marked redelivered, so the delivered markers are read: an event may
        come back here after LimeChat accepted it (parked by a worker that then crashed
        before acknowledging its message, which was delivered again). An entry that cannot be
        read goes along as a stand-in that the worker dead-letters as ``malformed``.
        """
        ids, payloads = self._claim(
            keys=[contract.RETRY_DUE, contract.RETRY_CLAIMED, contract.RETRY_EVENTS],
            args=[limit, self.claim_timeout],
        )
        if not ids:
            return 0
        id_list = [i.decode("utf-8", errors="replace") for i in ids]
        events: list[Event] = []
        for event_id, payload in zip(id_list, payloads, strict=False):
            if payload is None:
                log.error("parked retry %s has no payload; dropping its schedule entry", event_id)
                continue
            events.append(_promotable(event_id, payload))
        messages = wire.encode_batches(events, self.batch_size, redelivered=True)
        # (the ids as stored: one that is not UTF-8 must still match its entry)
        if not self._requeue(ids, messages):
            log.warning("lost a claim on %d parked retries to another scheduler", len(ids))
            return 0
        return len(events)


def _promotable(event_id: str, payload: bytes) -> Event:
    """The parked event, or a stand-in carrying what could not be read (never raises)."""
    event, problem = read_parked(payload)
    if event is not None:
        return event
    log.error("parked retry %s cannot be delivered (%s): dead-lettering it", event_id, problem)
    text = payload.decode("utf-8", errors="replace")
    carrier = quarantine_carrier(event_id, text, f"from the retry schedule: {problem}")
    return cast(Event, carrier)


def read_parked(payload: bytes | str) -> tuple[Event | None, str]:
    """A parked entry's event, or None and what is wrong with it (never raises)."""
    try:
        event = json.loads(payload)
        problem = envelope_problem(event)
    except Exception as exc:  # (RecursionError, ValueError, ...: anything may be stored here)
        return None, f"not JSON we can read ({type(exc).__name__})"
    return (None, problem) if problem else (cast(Event, event), "")


class Promoter(threading.Thread):
    """The scheduler loop every worker runs: promote what is due, then sleep a little.

    ``chores`` are (interval, function) pairs run from the same loop, at most that often:
    the worker's heartbeat, the DLQ retention limits. An error in one round is logged and the
    next round goes on. Should the thread die all the same, ``on_death`` is called: retries
    would stall, so the worker must stop and be replaced.
    """

    def __init__(
        self,
        schedule: RetrySchedule,
        interval: float,
        chores: Sequence[tuple[float, Callable[[], object]]] = (),
        on_death: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="limechat-scheduler", daemon=True)
        self.schedule = schedule
        self.interval = interval
        # (-inf: every chore runs on the first round, however long the machine has been up)
        self._chores = [(every, chore, [-math.inf]) for every, chore in chores]
        self._stop_event = threading.Event()
        self._failing = False
        self._on_death = on_death

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException:
            log.critical("the scheduler thread died", exc_info=True)
            raise
        finally:
            if not self._stop_event.is_set() and self._on_death is not None:
                self._on_death()

    def _loop(self) -> None:
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
            except Exception:
                log.exception("scheduler: unexpected error; going on with the next round")
            self._stop_event.wait(self.interval)

    def _run_chores(self) -> None:
        now = time.monotonic()
        for every, chore, last in self._chores:
            if now - last[0] >= every:
                last[0] = now
                chore()


def parked(client: redis.Redis, limit: int, account: str | None = None) -> list[dict[str, object]]:
    """The first ``limit`` parked events, soonest first, with when and why (for the CLI);
    only ``account``'s if given (read in pages, at most :data:`SCAN_LIMIT` entries)."""
    now = redis_now(client)
    out: list[dict[str, object]] = []
    page = limit if account is None else max(limit, 1000)
    for start in range(0, SCAN_LIMIT, page):
        due = cast(
            "list[tuple[bytes, float]]",
            client.zrange(contract.RETRY_DUE, start, start + page - 1, withscores=True),
        )
        if not due:
            break
        payloads = client.hmget(contract.RETRY_EVENTS, [i for i, _ in due])
        for (raw_id, score), payload in zip(due, payloads, strict=True):
            event, problem = read_parked(payload) if payload else (None, "no payload")
            if account is not None and (event is None or event.get("account") != account):
                continue
            out.append(
                {
                    "event_id": raw_id.decode("utf-8", errors="replace"),
                    "event": event.get("event") if event else None,
                    "account": event.get("account") if event else None,
                    "attempts": event.get("attempts", 0) if event else None,
                    "due_in_seconds": round(score - now, 3),
                    "why": _why_parked(event) if event else f"cannot be delivered: {problem}",
                }
            )
            if len(out) == limit:
                return out
        if account is None:
            break
    return out


def _why_parked(event: Event) -> str:
    if "slot_at" in event:
        return "waiting for its rate-limit slot"
    history = event.get("history") or []
    if history:
        last = history[-1]
        status = last.get("status")
        return f"status {status}" if status else str(last.get("error", ""))
    return "handed back by a worker (shutdown or long batch)"
