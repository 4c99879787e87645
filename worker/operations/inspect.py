"""Read-only views: the stats snapshot, parked retries, rate-limit state, Redis' health."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import stats
from ..accountstats import per_account
from ..schedule import parked
from .context import Ops

#: Parked retries listed unless the caller asks otherwise.
RETRIES_LIMIT = 100


def snapshot(ops: Ops) -> dict[str, Any]:
    """Everything ``stats`` shows, as the JSON ``stats --json`` prints (see README,
    'Reading stats'); ``rate_limit`` is LIMECHAT_ACCOUNT_ID's, if set, and ``by_account``
    has each account's waiting, parked and dead-lettered events, rate limit and pause."""
    settings = ops.settings
    with ops.store() as client:
        data = stats.snapshot(client, settings.account_id, settings.rate)
        data["by_account"] = per_account(client, settings.account_ids, settings.rate_of)
        return data


def retries(
    ops: Ops, limit: int = RETRIES_LIMIT, account: str | None = None
) -> list[dict[str, object]]:
    """The first ``limit`` parked events, soonest first (only ``account``'s, if given):
    ``event_id``, ``event`` (its name), ``account``, ``attempts``, ``due_in_seconds`` and
    ``why`` (a status, an error, a rate-limit slot)."""
    with ops.store() as client:
        return parked(client, limit, account)


def rate_limits(ops: Ops, accounts: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per account (default: every account configured): ``account``, ``limit``,
    ``effective_per_second`` (lowered by 429s without Retry-After) and
    ``paused_for_seconds`` (a 429's pause still to run, 0 if none)."""
    wanted = list(accounts) if accounts is not None else ops.settings.account_ids
    with ops.store() as client:
        return [stats.rate_state(client, a, ops.settings.rate_of(a)) for a in wanted if a]


@dataclass(frozen=True)
class Health:
    """What ``ping`` checks of Redis: ``problem`` (the worker would refuse this server) and
    ``warnings`` (it may evict keys, it is full)."""

    problem: str | None
    warnings: list[str] = field(default_factory=list)


def health(ops: Ops) -> Health:
    from ..server import server_facts, version_problem, warnings

    with ops.store() as client:
        client.ping()
        facts = server_facts(client)
    return Health(version_problem(facts) or None, warnings(facts))
