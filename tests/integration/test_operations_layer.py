"""The operations layer (worker/operations/) called directly, as the web console will call it:
cursor paging through filtered dead letters, selection-based replay and purge, export, import,
rate-limit state during a 429 pause, and Redis failures, all on the real Redis."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from click.testing import CliRunner

from producer import contract
from tests.chaos.redis_server import free_port
from tests.integration.test_dlq import event, queued
from worker import operations as ops_
from worker.cli import main
from worker.deadletter import DeadLetters
from worker.operations import Ops, Selection, SelectionError, StoreError
from worker.outcome import Reason
from worker.ratelimit import RateLimiter, parse_rate
from worker.settings import OperatorSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def ops(redis_url: str) -> Ops:
    return Ops(OperatorSettings(redis_url=redis_url, account_id="acct-1", batch_size=7))


@pytest.fixture
def mixed(r: redis.Redis) -> list[str]:
    """30 dead letters, oldest first: every third an ``auth`` 401 ``signup``, the rest
    ``exhausted`` 503 ``order_placed``; groups of three share a time (ties across pages)."""
    dead = DeadLetters(r)
    start = time.time() - 3600
    ids = []
    for i in range(30):
        if i % 3 == 0:
            e, reason, status = event("signup", i=i), Reason.AUTH, 401
        else:
            e, reason, status = event(i=i), Reason.EXHAUSTED, 503
        dead.add(e, reason, status=status, now=start + 10 * (i // 3))
        ids.append(e["id"])
    return ids


def all_pages(ops: Ops, selection: Selection, limit: int, **kw: int) -> list[ops_.Page]:
    pages = [ops_.list_page(ops, selection, limit=limit, **kw)]
    while (cursor := pages[-1].next_cursor) is not None:
        pages.append(ops_.list_page(ops, selection, cursor=cursor, limit=limit, **kw))
        assert len(pages) < 100, "the cursor does not move on"
    return pages


def test_pages_follow_a_cursor_through_filtered_entries_to_the_last_page(
    ops: Ops, r: redis.Redis, mixed: list[str]
) -> None:
    everything = DeadLetters(r).list()  # oldest first, ties by id: the order pages keep
    for selection, total in [
        (Selection(), 30),
        (Selection(reason="auth"), 10),
        (Selection(event="order_placed"), None),  # (only reading entries could count it)
        (Selection(status="4xx", account=None), None),
    ]:
        expected = [e["event_id"] for e in everything if selection.matches(e)]
        for limit in (1, 4, 10, 50):
            pages = all_pages(ops, selection, limit)
            got = [e["event_id"] for p in pages for e in p.entries]
            assert got == expected, (selection, limit)
            assert all(len(p.entries) == limit for p in pages[:-1])
            last = pages[-1]
            # The last page is never empty when something matches (one more match is peeked).
            assert last.next_cursor is None and 0 < len(last.entries) <= limit
            assert {p.total for p in pages} == {total}


def test_newest_first_pages_are_the_same_entries_in_reverse(
    ops: Ops, r: redis.Redis, mixed: list[str]
) -> None:
    everything = DeadLetters(r).list()
    middle = everything[12]["dead_lettered_at"]
    for selection in [
        Selection(),
        Selection(reason="auth"),
        Selection(event="order_placed"),
        Selection(until=middle),  # (a cursor may start past ``until``: it starts at it)
        Selection(since=middle, event="order_placed"),
    ]:
        expected = [e["event_id"] for e in everything if selection.matches(e)][::-1]
        for limit in (1, 4, 50):
            pages = all_pages(ops, selection, limit, newest_first=True)
            got = [e["event_id"] for p in pages for e in p.entries]
            assert got == expected, (selection, limit)
            assert pages[-1].next_cursor is None


def test_a_page_of_nothing_and_a_rare_filter_with_a_scan_limit(
    ops: Ops, r: redis.Redis, mixed: list[str]
) -> None:
    nothing = ops_.list_page(ops, Selection(event="no_such_event"))
    assert (nothing.entries, nothing.next_cursor, nothing.total) == ([], None, None)
    future = ops_.list_page(ops, Selection(since=time.time() + 60))
    assert (future.entries, future.next_cursor, future.total) == ([], None, 0)

    # A rare filter: each page reads at most 7 entries, so some pages come back short.
    rare = Selection(reason="auth", since=0.0)
    pages = all_pages(ops, rare, 5, scan_limit=7)
    assert [e["event_id"] for p in pages for e in p.entries] == mixed[::3]
    assert any(len(p.entries) < 5 for p in pages[:-1])
    assert {p.total for p in pages} == {None}  # (a reason with a time range: not cheap)


def test_a_cursor_stays_good_when_entries_before_it_leave(
    ops: Ops, r: redis.Redis, mixed: list[str]
) -> None:
    first = ops_.list_page(ops, limit=10)
    assert ops_.purge(ops, ids=[e["event_id"] for e in first.entries[:5]]) == 5
    rest = [e["event_id"] for p in all_pages_after(ops, first.next_cursor) for e in p.entries]
    assert rest == [e["event_id"] for e in DeadLetters(r).list()][5:]
    with pytest.raises(SelectionError, match="cursor"):
        ops_.list_page(ops, cursor="not-a-cursor")


def all_pages_after(ops: Ops, cursor: str | None) -> list[ops_.Page]:
    pages = []
    while cursor is not None:
        pages.append(ops_.list_page(ops, cursor=cursor, limit=8))
        cursor = pages[-1].next_cursor
    return pages


def test_replay_and_purge_by_selection_and_by_ids_return_counts(
    ops: Ops, r: redis.Redis, mixed: list[str]
) -> None:
    # Ids narrowed by a selection: an id of another event, an unknown one, one given twice.
    ids = [mixed[1], mixed[2], mixed[1], "no-such-id", mixed[3]]
    narrowed = Selection(event="order_placed")
    assert ops_.preview(ops, narrowed, ids).count == 2
    assert ops_.work_size(ops, ids) == 5 and ops_.work_size(ops) == 30
    assert ops_.purge(ops, narrowed, ids) == 2
    assert r.zcard(contract.DLQ_INDEX) == 28
    assert ops_.entry(ops, mixed[1]) is None and ops_.entry(ops, mixed[3]) is not None

    auth = Selection(reason="auth")
    shown = ops_.preview(ops, auth, rows=4)
    assert shown.count == 10 and [e["event_id"] for e in shown.entries] == mixed[0:12:3]
    progress: list[int] = []
    assert ops_.replay(ops, auth, on_progress=progress.append) == 10
    assert progress and progress[-1] == 10
    assert sorted(e["id"] for e in queued(r)) == sorted(mixed[::3])
    assert all(e["attempts"] == 0 for e in queued(r))
    assert ops_.replay(ops, auth) == 0  # (nothing left to take)
    assert ops_.purge(ops) == 18 and ops_.entries(ops) == []


def test_export_lines_then_import_them_all_or_nothing(
    ops: Ops, r: redis.Redis, mixed: list[str]
) -> None:
    export = ops_.Export(ops, Selection(reason="auth"))
    lines = list(export)
    assert export.count == 10 and export.skipped == 0
    assert [json.loads(line)["event_id"] for line in lines] == mixed[::3]
    bodies = ops_.Export(ops, Selection(reason="auth"), bodies=True)
    assert set(json.loads(next(iter(bodies)))) == {"distinct_id", "phone", "event", "data"}

    edited = [line.encode() for line in lines]
    broken = json.loads(lines[4])
    broken["event"]["phone"] = "12"
    broken["event"]["id"] = str(uuid.uuid4())
    with pytest.raises(ops_.ImportRefused) as refused:
        ops_.read_entries([*edited, json.dumps(broken).encode(), b"{nope\n"], "edited.jsonl")
    assert refused.value.count == 2 and len(refused.value.problems) == 2
    assert "edited.jsonl line 12, column 2" in refused.value.problems[0]
    assert refused.value.problems[1].startswith("edited.jsonl line 11: phone")
    assert r.llen(contract.QUEUE) == 0  # (reading queues nothing)

    done = ops_.import_entries(ops, edited, "edited.jsonl")
    assert (done.queued, done.left_dlq) == (10, 10)
    assert r.llen(contract.QUEUE) == 2  # batches of LIMECHAT_BATCH_SIZE (7)
    assert ops_.list_page(ops, Selection(reason="auth")).entries == []


def test_rate_limit_state_while_a_429_pause_is_set(ops: Ops, r: redis.Redis) -> None:
    [calm] = ops_.rate_limits(ops)
    assert calm == {
        "account": "acct-1",
        "limit": "10/s (burst 5)",
        "effective_per_second": 10.0,
        "paused_for_seconds": 0,
    }
    rate = parse_rate("10/s", 5)
    assert rate is not None
    RateLimiter(r, "acct-2", rate).pause(None)  # a 429 with no Retry-After: 5 s, rate halved
    RateLimiter(r, "acct-1", rate).pause(30.0)
    one, two = ops_.rate_limits(ops, ["acct-1", "acct-2"])
    assert one["effective_per_second"] == 10.0 and 25 < one["paused_for_seconds"] <= 30
    assert two["effective_per_second"] == 5.0 and 0 < two["paused_for_seconds"] <= 5
    assert ops_.snapshot(ops)["rate_limit"]["account"] == "acct-1"
    assert 25 < ops_.snapshot(ops)["rate_limit"]["paused_for_seconds"] <= 30
    assert ops_.rate_limits(Ops(OperatorSettings(redis_url=ops.settings.redis_url))) == []


def test_redis_failing_is_a_store_error_without_the_password() -> None:
    down = Ops(OperatorSettings(redis_url=f"redis://:pw-7d1@127.0.0.1:{free_port()}/0"))
    for call in (ops_.snapshot, ops_.retries, ops_.health, lambda o: ops_.list_page(o)):
        with pytest.raises(StoreError) as failed:
            call(down)
        assert "pw-7d1" not in str(failed.value) and "***" in str(failed.value)


def test_operator_commands_name_a_bad_rate_setting_and_need_no_credentials(
    redis_url: str, mixed: list[str]
) -> None:
    for variable, value in [("LIMECHAT_RATE_LIMIT", "fast"), ("LIMECHAT_RATE_BURST", "many")]:
        cli = CliRunner(env={"REDIS_URL": redis_url, variable: value})
        for args in (["stats"], ["dlq", "list"], ["retries", "list"]):
            result = cli.invoke(main, args)
            assert result.exit_code == 2, (args, result.output)
            assert result.stderr.startswith(f"error: {variable}="), (args, result.stderr)
            assert "Traceback" not in result.output
    fine = CliRunner(env={"REDIS_URL": redis_url, "LIMECHAT_RATE_LIMIT": "600/m"})
    for args in (["stats", "--json"], ["dlq", "list", "--json"], ["retries", "list"]):
        assert fine.invoke(main, args).exit_code == 0, args
