"""Dead letters for operators: select, page, show, count, replay, purge, export."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..deadletter import EVERYTHING, DeadLetters, Position
from ..selection import Selection, SelectionError, parse_status, parse_time
from .context import Ops

#: Entries a page holds unless the caller asks otherwise.
PAGE_SIZE = 100
#: Entries a preview (a dry run, a confirmation) shows; it counts all.
PREVIEW_ROWS = 50

Progress = Callable[[int], None]


def parse_selection(
    event: str | None = None,
    status: str | None = None,
    reason: str | None = None,
    since: str | None = None,
    until: str | None = None,
    account: str | None = None,
    *,
    now: float | None = None,
) -> Selection:
    """Filters as an operator types them (``4xx``, ``2h``, an ISO time) -> a :class:`Selection`.

    :class:`SelectionError` names the filter that cannot be read.
    """
    now = time.time() if now is None else now
    return Selection(
        event=event,
        status=parse_status(status) if status else None,
        reason=reason,
        since=parse_time(since, now, "--since") if since else None,
        until=parse_time(until, now, "--until") if until else None,
        account=account,
    )


@dataclass(frozen=True)
class Page:
    """One page of matching entries, oldest first (newest first if asked).

    ``next_cursor`` gives the next page (None: this is the last). ``total`` is how many
    entries match in all when one read can tell (no event, status or account filter; a
    reason filter with no time range), else None.
    """

    entries: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None


def list_page(
    ops: Ops,
    selection: Selection = EVERYTHING,
    *,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    scan_limit: int | None = None,
    newest_first: bool = False,
) -> Page:
    """The ``limit`` matching entries after ``cursor`` (from the page before; None: the first).

    Oldest first, or with ``newest_first`` newest first (a console's order); a cursor is
    read in the order of the call that gave it.

    A page costs reads in proportion to the entries it passes over, however deep it is (the
    cursor is a place in the index, not an offset). With ``scan_limit``, a page stops after
    reading that many entries even if it holds fewer than ``limit`` (a rare filter over a
    large DLQ): its ``next_cursor`` then goes on from where it stopped.
    Cursors stay valid while entries come and go.
    """
    if limit < 1:
        raise SelectionError(f"a page holds at least one entry (got {limit})")
    after = decode_cursor(cursor) if cursor else None
    found: list[dict[str, Any]] = []
    last: Position | None = None
    scanned = 0
    with ops.store() as client:
        dead = DeadLetters(client)
        for position, entry in dead.walk(selection, after, newest_first=newest_first):
            if selection.matches(entry):
                if len(found) == limit:  # one more matches: there is a next page
                    return Page(found, encode_cursor(last), dead.count_cheaply(selection))
                found.append(entry)
            last = position
            scanned += 1
            if scan_limit is not None and scanned >= scan_limit and len(found) < limit:
                return Page(found, encode_cursor(last), dead.count_cheaply(selection))
        return Page(found, None, dead.count_cheaply(selection))


def encode_cursor(position: Position | None) -> str | None:
    """A place in the index as text safe in a URL: ``<time>:<id as hex>``."""
    if position is None:
        return None
    when, member = position
    return f"{when!r}:{member.hex()}"


def decode_cursor(cursor: str) -> Position:
    try:
        when, member = cursor.split(":", 1)
        return float(when), bytes.fromhex(member)
    except ValueError:
        raise SelectionError(f"cursor {cursor[:40]!r} is not one a page gave") from None


def entries(ops: Ops, selection: Selection = EVERYTHING, limit: int | None = None) -> list[Any]:
    """Every matching entry (or the first ``limit``), oldest first."""
    with ops.store() as client:
        return DeadLetters(client).list(selection, limit)


def entry(ops: Ops, event_id: str) -> dict[str, Any] | None:
    """Everything stored for one dead letter, or None."""
    with ops.store() as client:
        return DeadLetters(client).get(event_id)


@dataclass(frozen=True)
class Preview:
    """What a replay or purge would take: the first entries, and how many in all."""

    entries: list[dict[str, Any]]
    count: int


def preview(
    ops: Ops,
    selection: Selection = EVERYTHING,
    ids: Sequence[str] | None = None,
    rows: int = PREVIEW_ROWS,
) -> Preview:
    """The first ``rows`` entries a replay/purge of ``ids`` (None: the selection) would take,
    and the count (read, not held: what a confirmation states)."""
    shown: list[dict[str, Any]] = []
    count = 0
    with ops.store() as client:
        dead = DeadLetters(client)
        found: Iterator[dict[str, Any]]
        if ids is not None:
            unique = dict.fromkeys(ids)  # (an id given twice is taken once)
            found = (e for e in (dead.get(i) for i in unique) if e and selection.matches(e))
        else:
            found = dead.select(selection)
        for one in found:
            if count < rows:
                shown.append(one)
            count += 1
    return Preview(shown, count)


def work_size(ops: Ops, ids: Sequence[str] | None = None) -> int:
    """An upper bound of what a replay/purge walks (to size a progress bar)."""
    if ids is not None:
        return len(ids)
    with ops.store() as client:
        return DeadLetters(client).count()


def replay(
    ops: Ops,
    selection: Selection = EVERYTHING,
    ids: Sequence[str] | None = None,
    on_progress: Progress | None = None,
) -> int:
    """Queue matching entries (or those of ``ids`` that match) again with fresh attempts;
    returns how many left the DLQ. ``on_progress`` gets the running count after each chunk."""
    with ops.store() as client:
        dead = DeadLetters(client, batch_size=ops.settings.batch_size)
        return dead.replay(selection, ids=ids, on_progress=on_progress)


def purge(
    ops: Ops,
    selection: Selection = EVERYTHING,
    ids: Sequence[str] | None = None,
    on_progress: Progress | None = None,
) -> int:
    """Delete matching entries (or those of ``ids`` that match) for good; returns how many."""
    with ops.store() as client:
        return DeadLetters(client).purge(selection, ids=ids, on_progress=on_progress)


class Export:
    """The matching entries as JSON lines, oldest first, read a page at a time as iterated.

    With ``bodies``, LimeChat request bodies instead (for ``send --file``): entries holding no
    event LimeChat could receive (malformed) are skipped. After iterating, ``count`` is how
    many lines were given and ``skipped`` how many were left out.
    """

    def __init__(self, ops: Ops, selection: Selection = EVERYTHING, *, bodies: bool = False):
        self.ops, self.selection, self.bodies = ops, selection, bodies
        self.count = 0
        self.skipped = 0

    def __iter__(self) -> Iterator[str]:
        from producer.envelope import request_body

        from ..vetting import envelope_problem

        with self.ops.store() as client:
            for one in DeadLetters(client).select(self.selection):
                if self.bodies and envelope_problem(dict(one.get("event") or {})):
                    self.skipped += 1
                    continue
                self.count += 1
                yield json_line(request_body(one["event"]) if self.bodies else one)


def json_line(record: Any) -> str:
    """One JSON line, readable (UTF-8); escaped where text cannot be UTF-8 (lone surrogates)."""
    text = json.dumps(record, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True)
    return text + "\n"
