"""What the Redis server must offer: version 6.2 or later, and no eviction.

kombu 5.7 restores unacknowledged messages with ``ZRANGE ... BYSCORE REV`` and our transport
takes them with ``BLMOVE``, both Redis 6.2 (February 2021): on an older server a dead worker's
messages would never come back, so the worker refuses to start there. The check is a probe of
the command itself, not of ``INFO`` (which managed services may rename away).

A ``maxmemory-policy`` other than ``noeviction`` lets Redis delete the queue, the retry schedule
and the DLQ to make room, without a trace; it is worth a loud warning wherever we look at Redis
(worker start, ``ping``, ``stats``). With ``noeviction`` a full Redis refuses writes instead,
which the producer reports and the workers wait out.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from producer import contract
from producer.errors import ConfigError

MINIMUM_VERSION = "6.2"
SAFE_POLICY = "noeviction"


class RedisTooOld(ConfigError):
    """The server lacks what the worker needs; the message names the minimum version."""


@dataclass(frozen=True)
class ServerFacts:
    version: str | None  # None when INFO is not available
    maxmemory_policy: str | None
    supports_byscore: bool
    used_memory: int | None = None
    maxmemory: int | None = None  # 0: no limit

    @property
    def full(self) -> bool:
        """At (or past) ``maxmemory``: Redis refuses writes that need memory."""
        return bool(self.maxmemory and self.used_memory and self.used_memory >= self.maxmemory)


def server_facts(client: redis.Redis) -> ServerFacts:
    """Read the server's version and eviction policy, and probe for Redis 6.2's commands."""
    try:
        info = client.info("server") | client.info("memory")
    except redis.ResponseError:  # INFO renamed or disabled by a managed service
        info = {}
    try:
        # Read-only, on a key that never exists: a syntax error before Redis 6.2.
        client.zrange(f"{contract.PREFIX}:probe", "+inf", "-inf", desc=True, byscore=True)
        supports = True
    except redis.ResponseError:
        supports = False
    version, policy = info.get("redis_version"), info.get("maxmemory_policy")
    used, limit = info.get("used_memory"), info.get("maxmemory")
    return ServerFacts(
        None if version is None else str(version),
        None if policy is None else str(policy),
        supports,
        used if isinstance(used, int) else None,
        limit if isinstance(limit, int) else None,
    )


def version_problem(facts: ServerFacts) -> str | None:
    """Why this server cannot run the worker, or None."""
    if facts.supports_byscore:
        return None
    found = f"this server is {facts.version}" if facts.version else "this server is older"
    return (
        f"Redis {MINIMUM_VERSION} or later is required ({found}): the worker takes and restores "
        "messages with BLMOVE and ZRANGE ... BYSCORE, without which a dead worker's messages "
        "would never be delivered"
    )


def eviction_warning(facts: ServerFacts) -> str | None:
    """A warning if Redis may evict our keys, or None when the policy is ``noeviction``."""
    if facts.maxmemory_policy == SAFE_POLICY:
        return None
    if facts.maxmemory_policy is None:
        return (
            "could not read Redis' maxmemory-policy (INFO is not available): make sure it is "
            "noeviction, or a full Redis deletes queued events, retries and dead letters"
        )
    return (
        f"Redis' maxmemory-policy is {facts.maxmemory_policy}: when Redis fills up it deletes "
        "keys, and queued events, retries and dead letters vanish without a trace; set "
        "maxmemory-policy noeviction (README, 'Deploying')"
    )


def warnings(facts: ServerFacts) -> list[str]:
    """What an operator should know about this Redis right now (for ``ping`` and ``stats``)."""
    found = [w for w in (version_problem(facts), eviction_warning(facts)) if w]
    if facts.full:
        found.append(
            "Redis is full (used_memory >= maxmemory): it refuses writes; send_event raises "
            "EnqueueError and workers wait, holding what they took, until memory is freed"
        )
    return found


def require_supported(client: redis.Redis) -> ServerFacts:
    """The server's facts; raises :class:`RedisTooOld` on a server the worker cannot use."""
    facts = server_facts(client)
    problem = version_problem(facts)
    if problem:
        raise RedisTooOld(problem)
    return facts
