"""``stats``, ``retries list`` and ``ping``: what operators look at (no credentials needed)."""

from __future__ import annotations

import os
import time

import click

from producer.errors import ConfigError

from .. import operations as ops_
from . import render
from .common import fail, failures, operations


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until Ctrl-C.")
def stats(as_json: bool, watch: bool) -> None:
    """Queue depth, parked retries, the DLQ by reason, counters, the rate limit and pause.

    Counters live in Redis and cover every worker. Per account (LIMECHAT_ACCOUNT_ID's, or every
    one of LIMECHAT_ACCOUNTS_FILE, and any other that events name): events waiting, parked and
    dead-lettered, the rate limit and any pause.
    """
    ops = operations()
    while True:
        with failures():
            data = ops_.snapshot(ops)
        if as_json:
            render.as_json(data, indent=None)
        else:
            if watch:
                click.clear()
            render.stats(data)
        if not watch:
            return
        try:
            time.sleep(2)
        except KeyboardInterrupt:
            return


@click.group()
def retries() -> None:
    """Events parked for a later attempt (or for their rate-limit slot)."""


@retries.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@click.option("--limit", type=click.IntRange(min=1), default=ops_.RETRIES_LIMIT, show_default=True)
@click.option("--account", metavar="ID", help="Only events sent with this account.")
def retries_list(as_json: bool, limit: int, account: str | None) -> None:
    """What is parked, when it is due, and why."""
    ops = operations()
    with failures():
        entries = ops_.retries(ops, limit, account)
    if as_json:
        render.as_json(entries)
    elif not entries:
        click.echo("nothing is parked")
    else:
        render.parked(entries)


@click.command()
def ping() -> None:
    """Exit 0 if Redis answers and the worker's configuration is valid (for health checks).

    Needs no LimeChat credentials: without them it warns that a worker would refuse to start.
    With LIMECHAT_ACCOUNTS_FILE it checks every account in it, tokens included (exit 1 naming
    the file, the line and what is wrong).
    Exits 1 on a Redis older than 6.2; warns (on stderr, still 0) when Redis may evict keys
    (a maxmemory-policy other than noeviction) or is full.
    """
    from ..settings import Settings, missing_credentials

    with_file = bool(os.environ.get("LIMECHAT_ACCOUNTS_FILE", "").strip())
    try:
        # every variable, checked; with a file, every account in it (its token must be there)
        checked = Settings.from_env(os.environ, need_credentials=with_file)
        ops = ops_.Ops.from_env(os.environ)
    except ConfigError as exc:
        fail(str(exc), 1)
    try:
        found = ops_.health(ops)
    except ops_.StoreError as exc:
        fail(str(exc), 1)
    if found.problem:
        fail(found.problem, 1)
    missing = missing_credentials(os.environ)
    if missing:
        click.echo(
            f"warning: {' and '.join(missing)} not set: a worker here would refuse to start",
            err=True,
        )
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)
    if with_file:
        click.echo(f"accounts: {', '.join(checked.account_set().ids)}")
    click.echo("ok")
