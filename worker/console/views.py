"""The pages: overview, dead letters (list, entry, confirm, act, export), retries, metrics.

Each view parses its input, calls one operation of :mod:`worker.operations`, and renders
the answer; bad input answers 400 naming it, Redis failing answers 503.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, render_template, request, stream_with_context

from .. import operations as ops_
from ..operations import SelectionError, StoreError
from . import metrics_view, present
from .app import console
from .chart import svg

pages = Blueprint("console", __name__)

FILTERS = ("event", "status", "reason", "since", "until")
REASONS = (
    "auth",
    "http_4xx",
    "exhausted",
    "redirect",
    "unknown_account",
    "malformed",
    "internal_error",
)
PAGE_SIZES = (25, 50, 100, 200)
#: Most entries one page reads: a rare filter over a large DLQ gives a short page (with a
#: cursor to read on) in bounded time instead of reading until the page is full.
SCAN_LIMIT = 3000
ACTIONS = ("replay", "purge")

T = TypeVar("T")


@pages.app_template_global()
def when(epoch: object) -> str:
    return present.when(epoch)


@pages.app_template_global()
def masked_text(value: object) -> str:
    return present.text(value)


@pages.app_errorhandler(SelectionError)
def bad_filter(exc: SelectionError) -> tuple[str, int]:
    return render_template("error.html", title="Bad request", message=str(exc)), 400


@pages.app_errorhandler(StoreError)
def store_failed(exc: StoreError) -> tuple[str, int]:
    return render_template("error.html", title="Redis is not answering", message=str(exc)), 503


@pages.get("/healthz")
def healthz() -> tuple[str, int, dict[str, str]]:
    """Open (a load balancer's probe): 200 when Redis answers, else 503. Says nothing more."""
    try:
        with console().ops.store() as client:
            client.ping()
    except StoreError:
        return "redis unavailable\n", 503, {"Content-Type": "text/plain"}
    return "ok\n", 200, {"Content-Type": "text/plain"}


@pages.get("/")
def overview() -> str:
    ops = console().ops
    data = ops_.snapshot(ops)
    with ops.store() as client:
        chart = svg(metrics_view.last_hour(client))
    return render_template("overview.html", stats=data, chart=chart, page="overview")


@pages.get("/api/stats")
def stats_json() -> Response:
    """What ``stats --json`` prints (the overview polls it)."""
    return jsonify(ops_.snapshot(console().ops))


@pages.get("/retries")
def retries() -> str:
    limit = _int_arg("limit", ops_.RETRIES_LIMIT, 1, 10_000)
    parked = ops_.retries(console().ops, limit)
    return render_template("retries.html", parked=parked, limit=limit, page="retries")


@pages.get("/metrics")
def metrics() -> Response:
    ops = console().ops
    with ops.store() as client:
        return metrics_view.prometheus(client, ops.settings.account_ids)


# --- dead letters ---


@pages.get("/dlq")
def dlq() -> str:
    filters = _filters(request.args)
    selection = _selection(filters)
    limit = _int_arg("limit", 50, 1, max(PAGE_SIZES))
    oldest = request.args.get("order") == "oldest"
    page = ops_.list_page(
        console().ops,
        selection,
        cursor=request.args.get("cursor") or None,
        limit=limit,
        scan_limit=SCAN_LIMIT,
        newest_first=not oldest,
    )
    return render_template(
        "dlq.html",
        page=page,
        filters=filters,
        set_filters={k: v for k, v in filters.items() if v},
        limit=limit,
        order="oldest" if oldest else "newest",
        reasons=REASONS,
        page_sizes=PAGE_SIZES,
        short=bool(page.next_cursor) and len(page.entries) < limit,
        scan_limit=SCAN_LIMIT,
        cursor=request.args.get("cursor"),
        event_name=_event_name,
        active="dlq",
    )


@pages.get("/dlq/entry/<path:event_id>")
def entry(event_id: str) -> tuple[str, int]:
    found = ops_.entry(console().ops, event_id)
    if found is None:
        message = f"No dead letter with id {event_id!r} (replayed or purged meanwhile?)."
        return render_template("error.html", title="Not found", message=message), 404
    event = dict(found.get("event") or {})
    return render_template(
        "entry.html",
        entry=found,
        name=_event_name(found),
        event_json=present.event_json(event),
        history=event.get("history") or [],
        active="dlq",
    ), 200


@pages.post("/dlq/confirm")
def confirm() -> str:
    """What a replay or purge would take, with its count, and the form that does it."""
    action, filters, ids = _action_request()
    # The count must be what the action takes: entries dead-lettered after this page was
    # drawn are left out by pinning the end of the time range to now at the latest.
    selection = _selection(filters)
    now = time.time()
    if selection.until is None or selection.until > now:
        filters["until"] = _iso(now)
        selection = _selection(filters)
    # (relative times such as 2h are fixed too, so the action takes the range counted here)
    filters["since"] = _iso(selection.since) if selection.since is not None else None
    filters["until"] = _iso(selection.until) if selection.until is not None else None
    shown = ops_.preview(console().ops, selection, ids=ids)
    return render_template(
        "confirm.html",
        action=action,
        filters=filters,
        ids=ids,
        preview=shown,
        event_name=_event_name,
        active="dlq",
    )


@pages.post("/dlq/act")
def act() -> str:
    action, filters, ids = _action_request()
    selection = _selection(filters)
    run = ops_.replay if action == "replay" else ops_.purge
    done = run(console().ops, selection, ids=ids)
    return render_template("done.html", action=action, done=done, active="dlq")


@pages.get("/dlq/export")
def export() -> Response:
    """What the filter matches as JSON lines, read a page at a time as it is sent."""
    selection = _selection(_filters(request.args))
    lines = iter(ops_.Export(console().ops, selection))
    # (the first line is read before the answer starts, so a Redis failure is a 503 page)
    first = next(lines, None)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Response(
        stream_with_context(_after(first, lines)),
        mimetype="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="dlq-{stamp}.jsonl"'},
    )


def _after(first: T | None, rest: Iterator[T]) -> Iterator[T]:
    if first is None:
        return
    yield first
    yield from rest


def _action_request() -> tuple[str, dict[str, str | None], list[str] | None]:
    form = request.form
    action = form.get("action", "")
    if action not in ACTIONS:
        raise SelectionError(f"action {action[:40]!r}: use replay or purge")
    scope = form.get("scope", "")
    if scope == "selected":
        ids: list[str] | None = form.getlist("ids")
        if not ids:
            raise SelectionError("no entries selected: tick at least one")
    elif scope == "matching":
        ids = None
    else:
        raise SelectionError(f"scope {scope[:40]!r}: use selected or matching")
    return action, _filters(form), ids


def _selection(filters: dict[str, str | None]) -> ops_.Selection:
    return ops_.parse_selection(
        event=filters["event"],
        status=filters["status"],
        reason=filters["reason"],
        since=filters["since"],
        until=filters["until"],
    )


def _filters(values: Any) -> dict[str, str | None]:
    return {name: (values.get(name) or "").strip() or None for name in FILTERS}


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SelectionError(f"{name} {raw[:40]!r} is not a whole number") from None
    if not low <= value <= high:
        raise SelectionError(f"{name} {value} must be between {low} and {high}")
    return value


def _event_name(entry: dict[str, Any]) -> str:
    return str((entry.get("event") or {}).get("event") or "-")


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()
