"""``dlq``: list, show, replay, purge, export and import dead letters."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .. import operations as ops_
from ..files import source_name
from ..operations import ImportRefused, Ops, Selection
from . import render
from .common import fail, failures, operations


@click.group()
def dlq() -> None:
    """Inspect, replay, purge, export and import dead letters.

    \b
    Filters (list, replay, purge, export):
      --event NAME        the event name, e.g. order_placed
      --status CODE       an HTTP status (400) or a class (4xx, 5xx)
      --reason KIND       http_4xx, auth, exhausted, malformed, redirect, unknown_account, ...
      --since / --until   ISO time (2026-11-26T08:00Z) or relative (30m, 2h, 7d)
      --account ID        the account the event was sent with
    """


def selection_options(command: Any) -> Any:
    options = [
        click.option("--event", "event_name", metavar="NAME", help="Only this event name."),
        click.option("--status", metavar="CODE", help="Only this HTTP status: 404, 4xx or 5xx."),
        click.option("--reason", metavar="KIND", help="Only this reason (auth, exhausted, ...)."),
        click.option("--since", metavar="TIME", help="Dead-lettered at or after: ISO or 2h."),
        click.option("--until", metavar="TIME", help="Dead-lettered at or before: ISO or 2h."),
        click.option("--account", metavar="ID", help="Only events sent with this account."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(event_name: str | None, **filters: Any) -> Selection:
    with failures():
        return ops_.parse_selection(event_name, **filters)


@dlq.command("list")
@selection_options
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, oldest first.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of entries, for scripts.")
def dlq_list(as_json: bool, limit: int | None, **filters: Any) -> None:
    """List dead letters, oldest first: a table, or --json."""
    selection = _selection(**filters)
    ops = operations()
    with failures():
        entries = ops_.entries(ops, selection, limit)
    if as_json:
        render.as_json(entries)
    elif not entries:
        click.echo("no dead letters" + (" match" if selection != Selection() else ""))
    else:
        render.dead_letters(entries)


@dlq.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="The stored entry as JSON.")
def dlq_show(event_id: str, as_json: bool) -> None:
    """Everything stored for one dead letter: why, the event, every attempt."""
    ops = operations()
    with failures():
        entry = ops_.entry(ops, event_id)
    if entry is None:
        fail(f"no dead letter with id {event_id}", 1)
    if as_json:
        render.as_json(entry)
    else:
        render.dead_letter(entry)


def _bulk(
    verb: str, event_ids: tuple[str, ...], select_all: bool, filters: dict[str, Any]
) -> tuple[Selection, list[str] | None, Ops]:
    """Shared by replay and purge: the selection, the ids, and the operations' settings."""
    selection = _selection(**filters)
    if select_all == bool(event_ids):
        fail(f"give event ids or --all to {verb} (filters narrow --all)", 2)
    ops = operations()
    return selection, (list(event_ids) if event_ids else None), ops


def _preview(ops: Ops, selection: Selection, ids: list[str] | None, verb: str) -> None:
    """The first entries a replay/purge would take, and how many in all (read, not held)."""
    found = ops_.preview(ops, selection, ids)
    if found.entries:
        render.dead_letters(found.entries)
        if found.count > len(found.entries):
            click.echo(f"... and {found.count - len(found.entries)} more")
    click.echo(f"would {verb} {found.count} dead letter(s)")


def _with_progress(total: int, label: str, work: Callable[[Any], int]) -> int:
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
    selection, ids, ops = _bulk("replay", event_ids, select_all, filters)
    with failures():
        if dry_run:
            _preview(ops, selection, ids, "replay")
            return
        count = _with_progress(
            ops_.work_size(ops, ids),
            "replaying",
            lambda progress: ops_.replay(ops, selection, ids, progress),
        )
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
    selection, ids, ops = _bulk("purge", event_ids, select_all, filters)
    with failures():
        if dry_run:
            _preview(ops, selection, ids, "purge")
            return
        if not yes:
            what = f"{len(ids)} listed" if ids is not None else "the selected"
            if not sys.stdin.isatty():
                fail("purge deletes dead letters for good: add --yes to confirm", 2)
            click.confirm(f"Delete {what} dead letters for good?", abort=True)
        count = _with_progress(
            ops_.work_size(ops, ids),
            "purging",
            lambda progress: ops_.purge(ops, selection, ids, progress),
        )
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
    selection = _selection(**filters)
    export = ops_.Export(operations(), selection, bodies=bodies)
    with failures():
        for line in export:  # (each written as it is read: the export holds one page)
            file.write(line)
    click.echo(f"exported {export.count} dead letter(s)", err=True)
    if export.skipped:
        click.echo(
            f"skipped {export.skipped} that hold no event LimeChat could receive (malformed); "
            "export without --bodies to see them",
            err=True,
        )


@dlq.command("import")
@click.argument("file", type=click.File("rb"))
def dlq_import(file: Any) -> None:
    """Queue the events of an exported (and perhaps edited) file again, with fresh attempts.

    Each line is an entry written by `dlq export`. Every event is validated first (all or
    nothing, errors by line; an event id on two lines is refused); the events keep their ids,
    and leave the DLQ as they are queued. The delivered markers still stop any that LimeChat
    already accepted.
    """
    try:
        events = ops_.read_entries(file, source_name(file))
    except ImportRefused as exc:
        for message in exc.problems:
            click.echo(f"error: {message}", err=True)
        fail(str(exc), 2)
    ops = operations()
    with failures():
        done = ops_.queue_events(ops, events)
    click.echo(f"queued {done.queued} event(s); {done.left_dlq} of them left the DLQ")
