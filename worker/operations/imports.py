"""``dlq import``: entries of an exported (and perhaps edited) file, checked, then queued."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from producer.envelope import Event
from producer.errors import ValidationError

from ..deadletter import DeadLetters
from ..files import parse_json_lines
from .context import Ops
from .errors import ImportRefused


@dataclass(frozen=True)
class Imported:
    queued: int  # events put on the queue
    left_dlq: int  # of them, how many were still in the DLQ (and left it in the same step)


def import_entries(ops: Ops, lines: Iterable[bytes], source: str) -> Imported:
    """Check every line first, then queue them all: nothing is queued if one is bad
    (:class:`ImportRefused`, its problems by line)."""
    events = read_entries(lines, source)
    return queue_events(ops, events)


def read_entries(lines: Iterable[bytes], source: str) -> list[Event]:
    """The events of the entries in ``lines``, each checked as ``send`` checks one (its id
    and time as the worker checks them); :class:`ImportRefused` if any line is bad."""
    from producer.api import build_event

    from ..vetting import envelope_problem

    parsed = parse_json_lines(lines, source)
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
        raise ImportRefused(source, parsed.error_count, parsed.report())
    return events


def queue_events(ops: Ops, events: Sequence[Event]) -> Imported:
    """Queue checked events with fresh attempts, each leaving the DLQ as it is queued."""
    with ops.store() as client:
        dead = DeadLetters(client, batch_size=ops.settings.batch_size)
        return Imported(len(events), dead.enqueue_and_remove(events))
