"""Counters every worker adds to in Redis, and the snapshot ``limechat-events stats`` shows."""

from __future__ import annotations

import os
import socket
from typing import Any

import redis

from producer import contract

from . import metering
from .queueage import oldest_waiting_age
from .ratelimit import Rate
from .server import server_facts, warnings

#: A worker is shown as alive if its scheduler looped this recently.
ALIVE_SECONDS = 15.0


def count_outcome(
    pipe: redis.client.Pipeline,
    outcome: str,
    event_name: str,
    status: int | None,
    *,
    created_at: float | None = None,
) -> None:
    """Queue the counter updates of one outcome (delivered, retried, dead_lettered), and its
    metrics (``created_at``, a delivery's enqueue time, for the latency histogram).

    Into :data:`~producer.contract.STATS_COUNTERS` go ``outcome``, ``outcome:event:NAME`` and
    ``status:CODE`` (``none`` without an HTTP answer), with the metrics in the same command.
    """
    metering.record(pipe, outcome, event_name, status, created_at=created_at)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat(client: redis.Redis, name: str) -> None:
    """Say this worker is alive (its scheduler calls this every loop)."""
    pipe = client.pipeline(transaction=False)
    pipe.zadd(contract.WORKERS, {name: redis_now(client)})
    pipe.execute()


def snapshot(client: redis.Redis, account: str | None, rate: Rate | None) -> dict[str, Any]:
    """Everything ``stats`` shows, read in one pipeline."""
    now = redis_now(client)
    pipe = client.pipeline(transaction=False)
    pipe.llen(contract.QUEUE)
    pipe.hlen(contract.UNACKED)
    pipe.zcard(contract.RETRY_DUE)
    pipe.zcard(contract.RETRY_CLAIMED)
    pipe.zrange(contract.RETRY_DUE, 0, 0, withscores=True)
    pipe.zcard(contract.DLQ_INDEX)
    pipe.hgetall(contract.DLQ_REASON_COUNTS)
    pipe.hgetall(contract.STATS_COUNTERS)
    pipe.zrangebyscore(contract.WORKERS, now - ALIVE_SECONDS, "+inf")
    pipe.zrange(contract.TAKING, 0, -1)
    keys = contract.rate_keys(account) if account else None
    if keys:
        pipe.get(keys.pause)
        pipe.get(keys.factor)
    (
        queued,
        in_flight,
        parked,
        claimed,
        first_due,
        dlq,
        reasons,
        counters,
        workers,
        taking_lists,
        *rate_state,
    ) = pipe.execute()
    totals, per_event, per_status = _split_counters(counters)
    return {
        # (in flight: recorded as unacknowledged, or moved into a worker's taking list and
        # not recorded yet, which is where a worker that died at that moment left it)
        "queue": {
            "waiting": queued,
            "in_flight": in_flight + _being_taken(client, taking_lists),
            "oldest_age_seconds": round(oldest_waiting_age(client, now), 3),
        },
        "retries": {
            "parked": parked + claimed,
            "next_due_in_seconds": round(first_due[0][1] - now, 3) if first_due else None,
        },
        "dlq": {
            "depth": dlq,
            "by_reason": {k.decode(): int(v) for k, v in sorted(reasons.items()) if int(v) > 0},
        },
        "counters": totals,
        "by_event": per_event,
        "by_status": per_status,
        "rate_limit": rate_section(account, rate, *(rate_state or [None, None]), now=now),
        "workers_alive": len(workers),
        "redis": _redis_section(client),
    }


def rate_state(client: redis.Redis, account: str, rate: Rate | None) -> dict[str, Any]:
    """One account's rate limit as ``stats`` shows it: limit, effective rate, pause left."""
    keys = contract.rate_keys(account)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.get(keys.pause)
    pipe.get(keys.factor)
    (seconds, micros), pause, factor = pipe.execute()
    return rate_section(account, rate, pause, factor, now=seconds + micros / 1_000_000)


def rate_section(
    account: str | None,
    rate: Rate | None,
    pause: bytes | None,
    factor: bytes | None,
    *,
    now: float,
) -> dict[str, Any]:
    """The limit, the rate 429s left (the limiter's factor key) and the pause still to run."""
    pause_until = float(pause) if pause else None
    lowered = float(factor) if factor else 1.0
    return {
        "account": account,
        "limit": str(rate) if rate else "off",
        "effective_per_second": round(rate.per_second * lowered, 3) if rate else None,
        "paused_for_seconds": (
            round(pause_until - now, 3) if pause_until and pause_until > now else 0
        ),
    }


def _redis_section(client: redis.Redis) -> dict[str, Any]:
    facts = server_facts(client)
    return {
        "version": facts.version,
        "maxmemory_policy": facts.maxmemory_policy,
        "used_memory": facts.used_memory,
        "maxmemory": facts.maxmemory,
        "warnings": warnings(facts),
    }


def _being_taken(client: redis.Redis, taking_lists: list[bytes]) -> int:
    if not taking_lists:
        return 0
    pipe = client.pipeline(transaction=False)
    for key in taking_lists:
        pipe.llen(key)
    return sum(pipe.execute())


def _split_counters(
    raw: dict[bytes, bytes],
) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[str, int]]:
    totals = {"delivered": 0, "retried": 0, "dead_lettered": 0, "dlq_trimmed": 0}
    per_event: dict[str, dict[str, int]] = {}
    per_status: dict[str, int] = {}
    for key_bytes, value in raw.items():
        key, count = key_bytes.decode(), int(value)
        if key.startswith("status:"):
            per_status[key.split(":", 1)[1]] = count
        elif ":event:" in key:
            outcome, name = key.split(":event:", 1)
            per_event.setdefault(name, {})[outcome] = count
        else:
            totals[key] = count
    return totals, dict(sorted(per_event.items())), dict(sorted(per_status.items()))


def redis_now(client: redis.Redis) -> float:
    """Redis' clock, the one the scheduler and the rate limiter use."""
    seconds, micros = client.time()
    return seconds + micros / 1_000_000
