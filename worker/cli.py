"""``limechat-events``: run a worker, send events, run the sandbox, inspect and replay the DLQ."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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


def _batch_size() -> int:
    """LIMECHAT_BATCH_SIZE: how many events replays and imports put in one message."""
    from producer.config import env_int

    try:
        return env_int(os.environ, "LIMECHAT_BATCH_SIZE", contract.DEFAULT_BATCH_SIZE)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _state_redis() -> Any:
    from .app import state_client

    try:
        return state_client(redis_url(os.environ), patient=False)
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
    help="Threads delivering events, per process [default: LIMECHAT_WORKER_CONCURRENCY or 16].",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Worker processes [default: LIMECHAT_WORKER_PROCESSES or one per CPU available].",
)
def worker(concurrency: int | None, processes: int | None) -> None:
    """Run a worker: deliver queued events to LimeChat and promote parked retries.

    Needs LIMECHAT_ACCESS_TOKEN and LIMECHAT_ACCOUNT_ID (refuses to start without them).
    Runs one process per CPU (a Python process delivers on one core), each with its threads;
    the processes share the queue, the rate limit and the retries through Redis.
    Stop it with SIGTERM or Ctrl-C: running deliveries finish, unstarted ones stay queued.
    """
    from .settings import Settings

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        _fail(str(exc), 2)
    run_workers(settings, concurrency, processes)


def run_workers(settings: Any, concurrency: int | None, processes: int | None) -> None:
    """One worker in this process, or a supervisor of several (``--processes``)."""
    # Until Celery (or the supervisor) installs its own handlers nothing has been taken: a
    # SIGTERM (a deploy) or a Ctrl-C is a clean stop, not death by signal (143) or "Aborted!".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_before_start)
    count = processes or settings.processes  # (settings resolve "one per CPU")
    if count == 1:
        run_worker(settings, concurrency)
        return
    from .logs import configure as configure_logging
    from .supervisor import supervise

    configure_logging(settings.log_level, settings.log_format)
    raise SystemExit(supervise(count, concurrency))


def _stop_before_start(signum: int, frame: Any) -> None:
    """Exit 0 at once. (Not ``sys.exit``: a handler may run inside a weakref callback or a
    ``__del__``, where Python prints the SystemExit and ignores it, and the start went on.)"""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (it may have interrupted a write to it)
            stream.flush()
    os._exit(0)


def run_worker(settings: Any, concurrency: int | None = None) -> None:
    from celery import signals

    from .app import check_server, create_app
    from .logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        check_server(settings.redis_url)
    except ConfigError as exc:
        _fail(str(exc), 2)
    fatal: list[int] = []  # 1 if the worker stopped itself because its scheduler died
    app = create_app(settings, on_fatal=lambda: fatal.append(1))
    stopped: list[Any] = []  # the worker, as its shutdown signal names it
    asked: list[str] = []  # the shutdowns signals asked for: "Warm" or "Cold"

    def remember(sender: Any, **_: Any) -> None:
        stopped.append(sender)

    def remember_asked(how: Any = "Warm", **_: Any) -> None:
        asked.append(str(how))

    signals.worker_shutdown.connect(remember, weak=False)
    signals.worker_shutting_down.connect(remember_asked, weak=False)
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
    raise SystemExit(_exit_code(stopped, asked, fatal))


def _exit_code(stopped: list[Any], asked: list[str], fatal: list[int]) -> int:
    """0 for a stop a signal asked for (SIGTERM, Ctrl-C), 1 for a cold one or a failure.

    worker_main drops the worker's exit code: one that died of an unrecoverable error would
    exit 0, and a supervisor restarting on failure would leave it dead. Celery announces a
    failure for Ctrl-C, which is a warm stop like SIGTERM here.
    """
    if fatal or "Cold" in asked:
        return 1
    if asked:
        return 0
    return int(getattr(stopped[-1], "exitcode", 0) or 0) if stopped else 0


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
    items, lines = parsed.items, parsed.line_numbers
    if account is not None:
        items = [{**i, "account": account} if isinstance(i, dict) else i for i in items]
    # Validate here too so a bad item is reported by line, and so --skip-invalid can drop it.
    good: list[Any] = []
    for index, item in enumerate(items):
        try:
            _event_from_item(item, index)
        except ValidationError as exc:
            parsed.add_error(f"{source} line {lines[index]}: {exc.field}: {exc.reason}")
            continue
        good.append(item)
    bad = parsed.error_count
    if bad and not skip_invalid:
        for message in parsed.report():
            click.echo(f"error: {message}", err=True)
        _fail(
            f"{bad} bad line(s) in {source}; nothing was enqueued "
            "(--skip-invalid sends the good ones)",
            2,
        )
    for message in parsed.report():
        click.echo(f"skipped: {message}", err=True)
    try:
        ids = _producer(Producer).send_events(good)
    except EnqueueError as exc:
        _fail(str(exc))
    click.echo(f"enqueued {len(ids)} event(s)" + (f", skipped {bad}" if bad else ""))
    if bad:
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
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Worker processes [default: LIMECHAT_WORKER_PROCESSES or one per CPU available].",
)
def up(sandbox_port: int, processes: int | None) -> None:
    """Development: start Redis if none answers, the sandbox if no credentials, and a worker."""
    from .devrun import bring_up

    try:
        settings = bring_up(sandbox_port)
    except ConfigError as exc:
        _fail(str(exc), 2)
    run_workers(settings, None, processes)


@main.group()
def dlq() -> None:
    """Inspect, replay, purge, export and import dead letters.

    \b
    Filters (list, replay, purge, export):
      --event NAME        the event name, e.g. order_placed
      --status CODE       an HTTP status (400) or a class (4xx, 5xx)
      --reason KIND       http_4xx, auth, exhausted, malformed, redirect, unknown_account, ...
      --since / --until   ISO time (2026-11-26T08:00Z) or relative (30m, 2h, 7d)
    """


def selection_options(command: Any) -> Any:
    options = [
        click.option("--event", "event_name", metavar="NAME", help="Only this event name."),
        click.option("--status", metavar="CODE", help="Only this HTTP status: 404, 4xx or 5xx."),
        click.option("--reason", metavar="KIND", help="Only this reason (auth, exhausted, ...)."),
        click.option("--since", metavar="TIME", help="Dead-lettered at or after: ISO or 2h."),
        click.option("--until", metavar="TIME", help="Dead-lettered at or before: ISO or 2h."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(
    event_name: str | None,
    status: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
) -> Any:
    import time

    from .selection import Selection, SelectionError, parse_status, parse_time

    now = time.time()
    try:
        return Selection(
            event=event_name,
            status=parse_status(status) if status else None,
            reason=reason,
            since=parse_time(since, now, "--since") if since else None,
            until=parse_time(until, now, "--until") if until else None,
        )
    except SelectionError as exc:
        _fail(str(exc), 2)


def _when(epoch: object) -> str:
    import datetime

    if not isinstance(epoch, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ"
    )


def _print_table(entries: list[dict[str, Any]]) -> None:
    click.echo(
        f"{'EVENT ID':36}  {'DEAD-LETTERED':20}  {'EVENT':24}  {'REASON':16}  {'STATUS':>6}  "
        "ATTEMPTS"
    )
    for e in entries:
        name = str((e.get("event") or {}).get("event"))
        status = e.get("status")
        click.echo(
            f"{e['event_id']:36}  {_when(e.get('dead_lettered_at')):20}  {name[:24]:24}  "
            f"{e['reason']:16}  {status if status is not None else '-':>6}  {e['attempts']}"
        )


@dlq.command("list")
@selection_options
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, oldest first.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of entries, for scripts.")
def dlq_list(as_json: bool, limit: int | None, **filters: Any) -> None:
    """List dead letters, oldest first: a table, or --json."""
    from .deadletter import EVERYTHING, DeadLetters

    selection = _selection(**filters)
    entries = _redis_call(lambda r: DeadLetters(r).list(selection, limit))
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False, indent=2))
    elif not entries:
        click.echo("no dead letters" + (" match" if selection != EVERYTHING else ""))
    else:
        _print_table(entries)


@dlq.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="The stored entry as JSON.")
def dlq_show(event_id: str, as_json: bool) -> None:
    """Everything stored for one dead letter: why, the event, every attempt."""
    from .deadletter import DeadLetters

    entry = _redis_call(lambda r: DeadLetters(r).get(event_id))
    if entry is None:
        _fail(f"no dead letter with id {event_id}", 1)
    if as_json:
        click.echo(json.dumps(entry, ensure_ascii=False, indent=2))
        return
    event = dict(entry.get("event") or {})
    history = event.pop("history", []) or []
    click.echo(f"event id:        {entry['event_id']}")
    click.echo(f"reason:          {entry['reason']}")
    click.echo(
        f"status:          {entry.get('status') if entry.get('status') is not None else '-'}"
    )
    click.echo(f"attempts:        {entry.get('attempts')}")
    click.echo(f"account:         {entry.get('account') or '(the worker default)'}")
    click.echo(f"created:         {_when(event.get('created_at'))}")
    click.echo(f"first attempt:   {_when(entry.get('first_attempt_at'))}")
    click.echo(f"last attempt:    {_when(entry.get('last_attempt_at'))}")
    click.echo(f"dead-lettered:   {_when(entry.get('dead_lettered_at'))}")
    click.echo(f"error:           {entry.get('error') or '-'}")
    click.echo(f"response body:   {entry.get('response_body') or '-'}")
    click.echo("event:")
    click.echo(json.dumps(event, ensure_ascii=False, indent=2))
    click.echo("attempts:" if history else "attempts: none (dead-lettered before any request)")
    for number, attempt in enumerate(history, start=1):
        status = attempt.get("status")
        click.echo(
            f"  {number:>2}. {_when(attempt.get('at'))}  status={status if status else '-'}  "
            f"ms={attempt.get('ms')}  {attempt.get('error') or ''}".rstrip()
        )


def _bulk(
    verb: str,
    event_ids: tuple[str, ...],
    select_all: bool,
    filters: dict[str, Any],
) -> tuple[Any, list[str] | None, Any]:
    """Shared by replay and purge: the selection, the ids, and the DeadLetters object."""
    from .deadletter import DeadLetters

    selection = _selection(**filters)
    if select_all == bool(event_ids):
        _fail(f"give event ids or --all to {verb} (filters narrow --all)", 2)
    ids = list(event_ids) if event_ids else None
    return selection, ids, DeadLetters(_state_redis(), batch_size=_batch_size())


_PREVIEW_ROWS = 50


def _preview(dead: Any, selection: Any, ids: list[str] | None, verb: str) -> int:
    """The first 50 entries a replay/purge would take, and how many in all (read, not held)."""
    if ids is not None:
        unique = dict.fromkeys(ids)  # (an id given twice is taken once)
        entries = (e for e in (dead.get(i) for i in unique) if e and selection.matches(e))
    else:
        entries = dead.select(selection)
    shown: list[dict[str, Any]] = []
    count = 0
    for entry in entries:
        if count < _PREVIEW_ROWS:
            shown.append(entry)
        count += 1
    if shown:
        _print_table(shown)
        if count > len(shown):
            click.echo(f"... and {count - len(shown)} more")
    click.echo(f"would {verb} {count} dead letter(s)")
    return count


def _with_progress(total: int, label: str, work: Any) -> int:
    """Run ``work(on_progress)`` with a progress bar when stderr is a terminal."""
    if not sys.stderr.isatty() or total < 1000:
        return int(work(None))
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        seen = [0]

        def advance(done: int) -> None:
            bar.update(done - seen[0])
            seen[0] = done

        return int(work(advance))


@dlq.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "select_all", is_flag=True, help="Every entry (narrowed by filters).")
@selection_options
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; change nothing.")
def dlq_replay(event_ids: tuple[str, ...], select_all: bool, dry_run: bool, **filters: Any) -> None:
    """Put dead letters back on the queue with fresh attempts.

    They go through the normal path (same rate limit), in batches; each batch leaves the DLQ
    in the same atomic step that queues it, so an interrupted replay loses nothing.
    """
    import redis

    selection, ids, dead = _bulk("replay", event_ids, select_all, filters)
    try:
        if dry_run:
            _preview(dead, selection, ids, "replay")
            return
        total = len(ids) if ids is not None else dead.count()
        count = _with_progress(
            total, "replaying", lambda p: dead.replay(selection, ids=ids, on_progress=p)
        )
    except redis.RedisError as exc:
        _fail_redis(exc)
    click.echo(f"replayed {count} event(s)")


@dlq.command("purge")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "select_all", is_flag=True, help="Every entry (narrowed by filters).")
@selection_options
@click.option("--dry-run", is_flag=True, help="Say what would be purged; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(
    event_ids: tuple[str, ...], select_all: bool, dry_run: bool, yes: bool, **filters: Any
) -> None:
    """Delete dead letters for good (asks first unless --yes)."""
    import redis

    selection, ids, dead = _bulk("purge", event_ids, select_all, filters)
    try:
        if dry_run:
            _preview(dead, selection, ids, "purge")
            return
        if not yes:
            what = f"{len(ids)} listed" if ids is not None else "the selected"
            if not sys.stdin.isatty():
                _fail("purge deletes dead letters for good: add --yes to confirm", 2)
            click.confirm(f"Delete {what} dead letters for good?", abort=True)
        total = len(ids) if ids is not None else dead.count()
        count = _with_progress(
            total, "purging", lambda p: dead.purge(selection, ids=ids, on_progress=p)
        )
    except redis.RedisError as exc:
        _fail_redis(exc)
    click.echo(f"purged {count} dead letter(s)")


@dlq.command("export")
@click.argument("file", type=click.File("w", encoding="utf-8"), default="-")
@selection_options
@click.option(
    "--bodies",
    is_flag=True,
    help="Write LimeChat request bodies (for `send --file`) instead of entries.",
)
def dlq_export(file: Any, bodies: bool, **filters: Any) -> None:
    """Write the selected entries as JSON lines to FILE (default: stdout), oldest first.

    Entries keep everything (for audit, or to edit and bring back with `dlq import`);
    --bodies writes just what LimeChat receives, for `send --file` (new event ids).
    Entries are read in pages that follow a cursor, so a replay, purge or trim running at
    the same time never makes the export skip an entry that stayed.
    """
    from producer.envelope import request_body

    from .deadletter import DeadLetters
    from .vetting import envelope_problem

    selection = _selection(**filters)
    skipped = 0

    def write_each(r: Any) -> int:
        # Each entry is written as it is read: the export holds a page, never the selection.
        nonlocal skipped
        count = 0
        for entry in DeadLetters(r).select(selection):
            if bodies and envelope_problem(dict(entry.get("event") or {})):
                skipped += 1  # (a malformed one: no LimeChat request body to write)
                continue
            record = request_body(entry["event"]) if bodies else entry
            file.write(_json_line(record))
            count += 1
        return count

    count = _redis_call(write_each)
    click.echo(f"exported {count} dead letter(s)", err=True)
    if skipped:
        click.echo(
            f"skipped {skipped} that hold no event LimeChat could receive (malformed); "
            "export without --bodies to see them",
            err=True,
        )


def _json_line(record: Any) -> str:
    """One JSON line, readable (UTF-8); escaped where text cannot be UTF-8 (lone surrogates)."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True)
    return text + "\n"


@dlq.command("import")
@click.argument("file", type=click.File("rb"))
def dlq_import(file: Any) -> None:
    """Queue the events of an exported (and perhaps edited) file again, with fresh attempts.

    Each line is an entry written by `dlq export`. Every event is validated first (all or
    nothing, errors by line; an event id on two lines is refused); the events keep their ids,
    and leave the DLQ as they are queued. The delivered markers still stop any that LimeChat
    already accepted.
    """
    from producer.api import build_event
    from producer.envelope import Event

    from .deadletter import DeadLetters
    from .vetting import envelope_problem

    name = getattr(file, "name", "-")
    source = "<stdin>" if name in ("-", "<stdin>") or not isinstance(name, str) else name
    parsed = parse_json_lines(file, source)
    events: list[Event] = []
    line_of_id: dict[str, int] = {}
    for item, line in zip(parsed.items, parsed.line_numbers, strict=True):
        envelope = item.get("event") if isinstance(item, dict) else None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("id"), str):
            parsed.add_error(f"{source} line {line}: not a dead-letter entry (no event with an id)")
            continue
        first = line_of_id.setdefault(envelope["id"], line)
        if first != line:
            parsed.add_error(
                f"{source} lines {first} and {line}: both are event {envelope['id']}; "
                "keep one (two copies of an event would overwrite each other)"
            )
            continue
        try:
            checked = build_event(
                envelope.get("event"),
                envelope.get("phone"),
                envelope.get("distinct_id"),
                envelope.get("data"),
                envelope.get("account"),
            )
        except ValidationError as exc:
            parsed.add_error(f"{source} line {line}: {exc}")
            continue
        event: Event = {
            **checked,
            "id": envelope["id"],
            "created_at": envelope.get("created_at", checked["created_at"]),
        }
        problem = envelope_problem(dict(event))  # (the id and the time as the worker sees them)
        if problem:
            parsed.add_error(f"{source} line {line}: {problem}")
            continue
        events.append(event)
    if parsed.error_count:
        for message in parsed.report():
            click.echo(f"error: {message}", err=True)
        _fail(f"{parsed.error_count} bad line(s) in {source}; nothing was imported", 2)
    size = _batch_size()
    left = _redis_call(lambda r: DeadLetters(r, batch_size=size).enqueue_and_remove(events))
    click.echo(f"queued {len(events)} event(s); {left} of them left the DLQ")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until Ctrl-C.")
def stats(as_json: bool, watch: bool) -> None:
    """Queue depth, parked retries, the DLQ by reason, counters, the rate limit and pause.

    Counters live in Redis and cover every worker. The rate limit shown is the account in
    LIMECHAT_ACCOUNT_ID, if set.
    """
    import time

    from .ratelimit import parse_rate
    from .stats import snapshot

    account = os.environ.get("LIMECHAT_ACCOUNT_ID") or None
    try:
        rate = parse_rate(
            os.environ.get("LIMECHAT_RATE_LIMIT") or "10/s",
            int(os.environ.get("LIMECHAT_RATE_BURST") or 5),
        )
    except (ConfigError, ValueError) as exc:
        _fail(str(exc), 2)
    while True:
        data = _redis_call(lambda r: snapshot(r, account, rate))
        if as_json:
            click.echo(json.dumps(data, ensure_ascii=False))
        else:
            if watch:
                click.clear()
            _print_stats(data)
        if not watch:
            return
        try:
            time.sleep(2)
        except KeyboardInterrupt:
            return


def _print_stats(data: dict[str, Any]) -> None:
    queue, retries, dead = data["queue"], data["retries"], data["dlq"]
    for warning in data["redis"]["warnings"]:
        click.echo(f"WARNING: {warning}")
    due = retries["next_due_in_seconds"]
    click.echo(f"queue:      {queue['waiting']} waiting, {queue['in_flight']} in flight")
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
    rl = data["rate_limit"]
    pause = f", PAUSED for {rl['paused_for_seconds']:.1f}s" if rl["paused_for_seconds"] else ""
    effective = rl["effective_per_second"]
    slowed = ""
    if (
        effective is not None
        and rl["limit"] != "off"
        and not rl["limit"].startswith(f"{effective:g}/")
    ):
        slowed = f", slowed by 429s to {effective:g}/s"
    click.echo(f"rate limit: {rl['limit']} for account {rl['account'] or '-'}{slowed}{pause}")
    click.echo(f"workers:    {data['workers_alive']} alive")
    click.echo(f"redis:      {_describe_redis(data['redis'])}")
    if data["by_event"]:
        click.echo("by event:")
        for name, counts in data["by_event"].items():
            parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            click.echo(f"  {name}: {parts}")
    if data["by_status"]:
        click.echo("by HTTP status: " + ", ".join(f"{k} {v}" for k, v in data["by_status"].items()))


def _describe_redis(facts: dict[str, Any]) -> str:
    used, limit = facts["used_memory"], facts["maxmemory"]
    memory = "" if used is None else f", {used / 2**20:.1f} MB used"
    if used is not None and limit:
        memory += f" of {limit / 2**20:.1f} MB"
    policy = facts["maxmemory_policy"] or "unknown"
    return f"{facts['version'] or 'version unknown'}{memory}, maxmemory-policy {policy}"


@main.group()
def retries() -> None:
    """Events parked for a later attempt (or for their rate-limit slot)."""


@retries.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def retries_list(as_json: bool, limit: int) -> None:
    """What is parked, when it is due, and why."""
    from .schedule import parked

    entries = _redis_call(lambda r: parked(r, limit))
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False, indent=2))
        return
    if not entries:
        click.echo("nothing is parked")
        return
    click.echo(f"{'EVENT ID':36}  {'EVENT':24}  {'DUE IN':>8}  {'ATTEMPTS':>8}  WHY")
    for e in entries:
        click.echo(
            f"{e['event_id']:36}  {str(e['event'])[:24]:24}  {e['due_in_seconds']:>7.1f}s  "
            f"{e['attempts']:>8}  {e['why']}"
        )


@main.command()
def ping() -> None:
    """Exit 0 if Redis answers and the worker's configuration is valid (for health checks).

    Exits 1 on a Redis older than 6.2; warns (on stderr, still 0) when Redis may evict keys
    (a maxmemory-policy other than noeviction) or is full.
    """
    from .app import state_client
    from .settings import Settings

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        _fail(str(exc), 1)
    import redis

    from .server import server_facts, version_problem, warnings

    try:
        client = state_client(settings.redis_url, patient=False)
        client.ping()
        facts = server_facts(client)
    except redis.RedisError as exc:
        _fail(f"Redis at {redacted_url(settings.redis_url)}: {type(exc).__name__}: {exc}", 1)
    problem = version_problem(facts)
    if problem:
        _fail(problem, 1)
    for warning in warnings(facts):
        click.echo(f"warning: {warning}", err=True)
    click.echo("ok")


def _fail_redis(exc: Exception) -> NoReturn:
    _fail(f"Redis at {redacted_url(redis_url(os.environ))}: {type(exc).__name__}: {exc}")


def _redis_call(action: Any) -> Any:
    import redis

    client = _state_redis()
    try:
        return action(client)
    except redis.RedisError as exc:
        _fail_redis(exc)
