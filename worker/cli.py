"""``limechat-events``: run a worker, send events, run the sandbox, inspect and replay the DLQ."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click

from producer import contract
from producer.config import redacted_url, redis_url
from producer.errors import ConfigError, EnqueueError, ValidationError

from . import __version__
from .files import describe_json_error, parse_json_lines


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _state_redis() -> Any:
    from .app import state_client

    try:
        return state_client(redis_url(os.environ))
    except ConfigError as exc:
        _fail(str(exc), 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="limechat-events")
def main() -> None:
    """Deliver Custom Events to LimeChat reliably: a Redis queue, Celery workers, retries with
    backoff, and a dead-letter queue you can inspect and replay.

    Configuration comes from the environment (REDIS_URL, LIMECHAT_ACCESS_TOKEN,
    LIMECHAT_ACCOUNT_ID, ...); see the README for every variable and its default.
    """


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Threads delivering events [default: LIMECHAT_WORKER_CONCURRENCY or 16].",
)
def worker(concurrency: int | None) -> None:
    """Run a worker: deliver queued events to LimeChat and promote parked retries.

    Needs LIMECHAT_ACCESS_TOKEN and LIMECHAT_ACCOUNT_ID (refuses to start without them).
    Stop it with SIGTERM or Ctrl-C: running deliveries finish, unstarted ones stay queued.
    """
    from .settings import Settings

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        _fail(str(exc), 2)
    run_worker(settings, concurrency)


def run_worker(settings: Any, concurrency: int | None = None) -> None:
    from .app import create_app
    from .logs import configure

    configure(settings.log_level)
    app = create_app(settings)
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency or settings.concurrency}",
            f"--queues={contract.QUEUE}",
            f"--loglevel={settings.log_level}",
            "--hostname=limechat-events@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@main.command()
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
    from producer import Producer

    if file is not None:
        if event or phone or distinct_id or data_json or idempotency_key:
            _fail("--file takes the events from the file; give no EVENT, --phone or --data", 2)
        _send_file(file, account, skip_invalid)
        return
    if not event or not phone:
        _fail("give EVENT and --phone (or --file); see --help", 2)
    data = None
    if data_json is not None:
        try:
            data = json.loads(data_json)
        except json.JSONDecodeError as exc:
            _fail(describe_json_error(exc, "--data is not valid JSON"), 2)
    try:
        event_id = _producer(Producer).send_event(
            event,
            phone=phone,
            distinct_id=distinct_id,
            data=data,
            account=account,
            idempotency_key=idempotency_key,
        )
    except ValidationError as exc:
        _fail(str(exc), 2)
    except EnqueueError as exc:
        _fail(str(exc))
    click.echo(event_id)


def _producer(factory: Any) -> Any:
    try:
        return factory()
    except ConfigError as exc:
        _fail(str(exc), 2)


def _send_file(file: Any, account: str | None, skip_invalid: bool) -> None:
    from producer import Producer
    from producer.api import _event_from_item

    name = getattr(file, "name", "-")
    source = "<stdin>" if name in ("-", "<stdin>") or not isinstance(name, str) else name
    parsed = parse_json_lines(file, source)
    items, lines, errors = parsed.items, parsed.line_numbers, parsed.errors
    if account is not None:
        items = [{**i, "account": account} if isinstance(i, dict) else i for i in items]
    # Validate here too so a bad item is reported by line, and so --skip-invalid can drop it.
    good: list[Any] = []
    for index, item in enumerate(items):
        try:
            _event_from_item(item, index)
        except ValidationError as exc:
            errors.append(f"{source} line {lines[index]}: {exc.field}: {exc.reason}")
            continue
        good.append(item)
    if errors and not skip_invalid:
        for message in errors:
            click.echo(f"error: {message}", err=True)
        _fail(
            f"{len(errors)} bad line(s) in {source}; nothing was enqueued "
            "(--skip-invalid sends the good ones)",
            2,
        )
    for message in errors:
        click.echo(f"skipped: {message}", err=True)
    try:
        ids = _producer(Producer).send_events(good)
    except EnqueueError as exc:
        _fail(str(exc))
    click.echo(f"enqueued {len(ids)} event(s)" + (f", skipped {len(errors)}" if errors else ""))
    if errors:
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", help="Accept only this x-limechat-uat [default: any non-empty].")
@click.option("--account", help="Accept only this x-fb-account-id [default: any non-empty].")
def sandbox(host: str, port: int, token: str | None, account: str | None) -> None:
    """Run a local stand-in for LimeChat's endpoint that checks and prints what it receives.

    Point a worker at it with LIMECHAT_API_URL=http://127.0.0.1:8765/api/v1/cvf-events.
    """
    from .sandbox import main as serve

    serve(host, port, token, account)


@main.command()
@click.option(
    "--sandbox-port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the sandbox started when no credentials are set.",
)
def up(sandbox_port: int) -> None:
    """Development: start Redis if none answers, the sandbox if no credentials, and a worker."""
    from .devrun import bring_up

    try:
        settings = bring_up(sandbox_port)
    except ConfigError as exc:
        _fail(str(exc), 2)
    run_worker(settings)


@main.group()
def dlq() -> None:
    """Inspect and replay the dead-letter queue."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, oldest first.")
def dlq_list(as_json: bool, limit: int | None) -> None:
    """List dead letters, oldest first."""
    from .deadletter import DeadLetters

    entries = _redis_call(lambda r: DeadLetters(r).list(limit))
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False, indent=2))
        return
    if not entries:
        click.echo("the dead-letter queue is empty")
        return
    click.echo(f"{'EVENT ID':36}  {'EVENT':24}  {'REASON':16}  {'STATUS':6}  ATTEMPTS")
    for e in entries:
        name = str((e.get("event") or {}).get("event"))
        click.echo(
            f"{e['event_id']:36}  {name[:24]:24}  {e['reason']:16}  "
            f"{e['status'] if e['status'] is not None else '-':>6}  {e['attempts']}"
        )


@dlq.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every entry.")
def dlq_replay(event_ids: tuple[str, ...], replay_all: bool) -> None:
    """Put dead letters back on the queue with fresh attempts (same rate limit, same path).

    Each chunk leaves the DLQ in the same atomic step that puts it back on the queue.
    """
    from .deadletter import DeadLetters

    if replay_all == bool(event_ids):
        _fail("give event ids or --all (not both)", 2)
    if replay_all:
        count = _redis_call(lambda r: DeadLetters(r).replay_all())
    else:
        count = _redis_call(lambda r: DeadLetters(r).replay(event_ids))
    click.echo(f"replayed {count} event(s)")


def _redis_call(action: Any) -> Any:
    import redis

    client = _state_redis()
    try:
        return action(client)
    except redis.RedisError as exc:
        _fail(f"Redis at {redacted_url(redis_url(os.environ))}: {type(exc).__name__}: {exc}")
