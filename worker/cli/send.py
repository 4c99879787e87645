"""``send``: enqueue one event, or a JSON-lines file of them (all or nothing)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from producer.errors import ConfigError, EnqueueError, ValidationError

from ..files import describe_json_error, source_name
from ..operations import check_file
from .common import fail


@click.command()
@click.argument("event", required=False)
@click.option("--phone", help="Phone number with country code, e.g. +915673412780.")
@click.option("--distinct-id", help="The user's id in your system [default: the phone].")
@click.option("--data", "data_json", help="The event's data as a JSON object.")
@click.option("--account", help="LimeChat account id the event belongs to.")
@click.option("--idempotency-key", help="Send at most once per key within 24 hours.")
@click.option(
    "--file",
    "file",
    type=click.File("rb"),
    help="JSON lines, each a LimeChat request body; '-' reads stdin.",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="With --file: enqueue the good lines and report the bad ones.",
)
def send(
    event: str | None,
    phone: str | None,
    distinct_id: str | None,
    data_json: str | None,
    account: str | None,
    idempotency_key: str | None,
    file: Any,
    skip_invalid: bool,
) -> None:
    """Enqueue one event, or every event of a JSON-lines file (all or nothing).

    \b
      limechat-events send order_placed --phone +915673412780 \\
          --data '{"order_id": "98765", "currency": "INR"}'
      limechat-events send --file events.jsonl
    """
    if file is not None:
        if event or phone or distinct_id or data_json or idempotency_key:
            fail("--file takes the events from the file; give no EVENT, --phone or --data", 2)
        _send_file(file, account, skip_invalid)
        return
    if not event or not phone:
        fail("give EVENT and --phone (or --file); see --help", 2)
    data = None
    if data_json is not None:
        try:
            data = json.loads(data_json)
        except json.JSONDecodeError as exc:
            fail(describe_json_error(exc, "--data is not valid JSON"), 2)
    try:
        event_id = _producer().send_event(
            event,
            phone=phone,
            distinct_id=distinct_id,
            data=data,
            account=account,
            idempotency_key=idempotency_key,
        )
    except ValidationError as exc:
        fail(str(exc), 2)
    except EnqueueError as exc:
        fail(str(exc))
    click.echo(event_id)


def _producer() -> Any:
    from producer import Producer

    try:
        return Producer()
    except ConfigError as exc:
        fail(str(exc), 2)


def _send_file(file: Any, account: str | None, skip_invalid: bool) -> None:
    source = source_name(file)
    checked = check_file(file, source, account)
    if checked.bad and not skip_invalid:
        for message in checked.problems:
            click.echo(f"error: {message}", err=True)
        fail(
            f"{checked.bad} bad line(s) in {source}; nothing was enqueued "
            "(--skip-invalid sends the good ones)",
            2,
        )
    for message in checked.problems:
        click.echo(f"skipped: {message}", err=True)
    try:
        ids = _producer().send_events(checked.good)
    except EnqueueError as exc:
        fail(str(exc))
    skipped = f", skipped {checked.bad}" if checked.bad else ""
    click.echo(f"enqueued {len(ids)} event(s){skipped}")
    if checked.bad:
        sys.exit(1)
