"""Per-account figures for ``stats``: waiting, parked and dead-lettered events, rate and pause.

The queue, the schedule and the DLQ are shared by every account, so an account's share is
counted by reading the events themselves: at most :data:`SCAN_LIMIT` of each (queue messages,
parked entries, dead letters). Past that the counts cover what was read and say so
(``complete: false``): ``stats`` stays a quick read however deep a backlog grows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import redis

from producer import contract

from .queueage import queued_events
from .ratelimit import Rate
from .stats import rate_state

#: Most items of each kind read for the per-account counts.
SCAN_LIMIT = 50_000
#: How events without an account are shown (they go to the default account).
NO_ACCOUNT = "(default)"


def per_account(
    client: redis.Redis, accounts: Iterable[str], rate_of: Callable[[str], Rate | None]
) -> dict[str, Any]:
    """``{"complete": bool, "accounts": [{account, waiting, parked, dlq, rate_limit}, ...]}``:
    every configured account, and any other one events name (``(default)`` for none)."""
    waiting, full_queue = _queue_accounts(client)
    parked, full_parked = _hash_accounts(client, contract.RETRY_EVENTS, lambda e: e)
    dead, full_dlq = _hash_accounts(client, contract.DLQ_ENTRIES, lambda e: e)
    known = list(accounts)
    named = sorted((set(waiting) | set(parked) | set(dead)) - set(known))
    rows = []
    for account in [*known, *named]:
        row: dict[str, Any] = {
            "account": account,
            "configured": account in known,
            "waiting": waiting.get(account, 0),
            "parked": parked.get(account, 0),
            "dlq": dead.get(account, 0),
        }
        if account in known:
            row["rate_limit"] = rate_state(client, account, rate_of(account))
        rows.append(row)
    return {"complete": full_queue and full_parked and full_dlq, "accounts": rows}


def _label(event: object) -> str:
    account = event.get("account") if isinstance(event, dict) else None
    return account if isinstance(account, str) else NO_ACCOUNT


def _queue_accounts(client: redis.Redis) -> tuple[Counter[str], bool]:
    """Events waiting on the queue by account (kombu messages carrying ``deliver(events)``)."""
    counts: Counter[str] = Counter()
    total = int(client.llen(contract.QUEUE))
    for raw in client.lrange(contract.QUEUE, 0, SCAN_LIMIT - 1):
        for event in queued_events(raw) or []:
            counts[_label(event)] += 1
    return counts, total <= SCAN_LIMIT


def _hash_accounts(
    client: redis.Redis, key: str, event_of: Callable[[Any], Any]
) -> tuple[Counter[str], bool]:
    """Entries of a hash of JSON events (parked retries, dead letters) by account."""
    counts: Counter[str] = Counter()
    read = 0
    for _, payload in client.hscan_iter(key, count=1000):
        read += 1
        if read > SCAN_LIMIT:
            return counts, False
        try:
            counts[_label(event_of(json.loads(payload)))] += 1
        except Exception:  # (a hostile entry must not take stats, the console or /metrics down)
            continue
    return counts, True
