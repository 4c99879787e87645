"""How commands show things: times, the dead-letter table, one entry, stats, retries."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click


def when(epoch: object) -> str:
    if not isinstance(epoch, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ"
    )


def as_json(data: Any, indent: int | None = 2) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=indent))


def dead_letters(entries: list[dict[str, Any]]) -> None:
    click.echo(
        f"{'EVENT ID':36}  {'DEAD-LETTERED':20}  {'EVENT':24}  {'REASON':16}  {'STATUS':>6}  "
        "ATTEMPTS"
    )
    for e in entries:
        name = str((e.get("event") or {}).get("event"))
        status = e.get("status")
        click.echo(
            f"{e['event_id']:36}  {when(e.get('dead_lettered_at')):20}  {name[:24]:24}  "
            f"{e['reason']:16}  {status if status is not None else '-':>6}  {e['attempts']}"
        )


def dead_letter(entry: dict[str, Any]) -> None:
    event = dict(entry.get("event") or {})
    history = event.pop("history", []) or []
    click.echo(f"event id:        {entry['event_id']}")
    click.echo(f"reason:          {entry['reason']}")
    click.echo(
        f"status:          {entry.get('status') if entry.get('status') is not None else '-'}"
    )
    click.echo(f"attempts:        {entry.get('attempts')}")
    click.echo(f"account:         {entry.get('account') or '(the worker default)'}")
    click.echo(f"created:         {when(event.get('created_at'))}")
    click.echo(f"first attempt:   {when(entry.get('first_attempt_at'))}")
    click.echo(f"last attempt:    {when(entry.get('last_attempt_at'))}")
    click.echo(f"dead-lettered:   {when(entry.get('dead_lettered_at'))}")
    click.echo(f"error:           {entry.get('error') or '-'}")
    click.echo(f"response body:   {entry.get('response_body') or '-'}")
    click.echo("event:")
    click.echo(json.dumps(event, ensure_ascii=False, indent=2))
    click.echo("attempts:" if history else "attempts: none (dead-lettered before any request)")
    for number, attempt in enumerate(history, start=1):
        status = attempt.get("status")
        click.echo(
            f"  {number:>2}. {when(attempt.get('at'))}  status={status if status else '-'}  "
            f"ms={attempt.get('ms')}  {attempt.get('error') or ''}".rstrip()
        )


def stats(data: dict[str, Any]) -> None:
    queue, retries, dead = data["queue"], data["retries"], data["dlq"]
    for warning in data["redis"]["warnings"]:
        click.echo(f"WARNING: {warning}")
    due = retries["next_due_in_seconds"]
    oldest = f" (the next waiting {queue['oldest_age_seconds']:.0f}s)" if queue["waiting"] else ""
    click.echo(f"queue:      {queue['waiting']} waiting{oldest}, {queue['in_flight']} in flight")
    click.echo(
        f"retries:    {retries['parked']} parked"
        + (f", next due in {max(due, 0):.1f}s" if due is not None else "")
    )
    reasons = ", ".join(f"{k} {v}" for k, v in dead["by_reason"].items())
    click.echo(f"dlq:        {dead['depth']}" + (f" ({reasons})" if reasons else ""))
    c = data["counters"]
    click.echo(
        f"totals:     delivered {c['delivered']}, retried {c['retried']}, "
        f"dead-lettered {c['dead_lettered']}, trimmed by retention {c['dlq_trimmed']}"
    )
    accounts = data.get("by_account", {}).get("accounts", [])
    if len(accounts) > 1 or (accounts and accounts[0]["account"] != data["rate_limit"]["account"]):
        by_account(data["by_account"])
    else:
        click.echo(f"rate limit: {rate_limit(data['rate_limit'])}")
    click.echo(f"workers:    {data['workers_alive']} alive")
    click.echo(f"redis:      {redis_server(data['redis'])}")
    if data["by_event"]:
        click.echo("by event:")
        for name, counts in data["by_event"].items():
            parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            click.echo(f"  {name}: {parts}")
    if data["by_status"]:
        click.echo("by HTTP status: " + ", ".join(f"{k} {v}" for k, v in data["by_status"].items()))


def by_account(section: dict[str, Any]) -> None:
    """One line per account: its events waiting, parked and dead-lettered, limit and pause."""
    partial = "" if section["complete"] else " (counted over the first 50,000 of each)"
    click.echo(f"accounts:{partial}")
    width = max(len(row["account"]) for row in section["accounts"])
    for row in section["accounts"]:
        rl = row.get("rate_limit")
        limit = rate_limit(rl).replace(f" for account {rl['account']}", "") if rl else "NOT SET"
        click.echo(
            f"  {row['account']:<{width}}  {row['waiting']} waiting, {row['parked']} parked, "
            f"{row['dlq']} in the DLQ; rate {limit}"
        )


def rate_limit(rl: dict[str, Any]) -> str:
    pause = f", PAUSED for {rl['paused_for_seconds']:.1f}s" if rl["paused_for_seconds"] else ""
    effective = rl["effective_per_second"]
    slowed = ""
    if (
        effective is not None
        and rl["limit"] != "off"
        and not rl["limit"].startswith(f"{effective:g}/")
    ):
        slowed = f", slowed by 429s to {effective:g}/s"
    return f"{rl['limit']} for account {rl['account'] or '-'}{slowed}{pause}"


def redis_server(facts: dict[str, Any]) -> str:
    used, limit = facts["used_memory"], facts["maxmemory"]
    memory = "" if used is None else f", {used / 2**20:.1f} MB used"
    if used is not None and limit:
        memory += f" of {limit / 2**20:.1f} MB"
    policy = facts["maxmemory_policy"] or "unknown"
    return f"{facts['version'] or 'version unknown'}{memory}, maxmemory-policy {policy}"


def parked(entries: list[dict[str, Any]]) -> None:
    click.echo(f"{'EVENT ID':36}  {'EVENT':24}  {'DUE IN':>8}  {'ATTEMPTS':>8}  WHY")
    for e in entries:
        click.echo(
            f"{e['event_id']:36}  {str(e['event'])[:24]:24}  {e['due_in_seconds']:>7.1f}s  "
            f"{e['attempts']:>8}  {e['why']}"
        )
