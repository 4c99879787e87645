"""A process applying the DLQ retention limits, started by tests/integration/test_dlq.py
(a module of its own so that a spawned process imports little)."""

from __future__ import annotations

from typing import Any

import redis

from worker.deadletter import DeadLetters


def trim_on_each_start(redis_url: str, start: Any, done: Any, trials: int, limits: Any) -> None:
    """For each trial: wait at ``start`` for the other trimmers (and the test) to be ready,
    apply the retention limits ``limits(trial)`` = (max_entries, max_age, now) once, as each
    of a worker's processes does, then wait at ``done``."""
    client = redis.Redis.from_url(redis_url)
    dead = DeadLetters(client)
    for trial in range(trials):
        start.wait(60)
        max_entries, max_age, now = limits[trial]
        dead.trim(max_entries=max_entries, max_age=max_age, now=now)
        done.wait(60)
    client.close()
