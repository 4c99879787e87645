"""The dead-letter queue and its CLI: filters, show, replay, purge, export/import, retention."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from producer import contract
from producer.envelope import Event, new_event, request_body
from tests.helpers import ROOT, running_worker, wait_for
from tests.integration.trimmer import trim_on_each_start
from worker.cli import main
from worker.deadletter import DeadLetters
from worker.outcome import Reason
from worker.sandbox import Sandbox
from worker.selection import Selection

PHONE = "+915673412780"

pytestmark = pytest.mark.integration


def event(name: str = "order_placed", **data: object) -> Event:
    e = new_event(name, PHONE, PHONE, dict(data), None)
    e["attempts"] = 3
    e["history"] = [{"at": time.time(), "status": 503, "error": "", "ms": 12}]
    return e


def queued(r: redis.Redis) -> list[Event]:
    out: list[Event] = []
    for raw in reversed(r.lrange(contract.QUEUE, 0, -1)):
        out.extend(json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0])
    return out


def fill(
    r: redis.Redis,
    count: int,
    reason: Reason = Reason.EXHAUSTED,
    *,
    first_at: float | None = None,
    **data: object,
) -> None:
    """``count`` dead letters, oldest first, each with ``data`` and its number ``i``; with
    ``first_at``, number i is dead-lettered at ``first_at + i`` seconds."""
    with r.pipeline(transaction=False) as pipe:
        writer = DeadLetters(pipe)  # (its script calls queue up in the pipeline)
        for i in range(count):
            at = None if first_at is None else first_at + i
            writer.add(event(i=i, **data), reason, status=503, now=at)
        pipe.execute()


@pytest.fixture
def dlq(r: redis.Redis) -> DeadLetters:
    return DeadLetters(r, batch_size=3)


@pytest.fixture
def cli(redis_url: str) -> CliRunner:
    return CliRunner(env={"REDIS_URL": redis_url})


@pytest.fixture
def mixed(dlq: DeadLetters) -> dict[str, str]:
    """Four dead letters of different kinds; returns their ids by a short name."""
    ids = {}
    for key, name, reason, status in [
        ("bad", "order_placed", Reason.HTTP_4XX, 400),
        ("gone", "order_placed", Reason.HTTP_4XX, 404),
        ("auth", "product_view", Reason.AUTH, 401),
        ("down", "product_view", Reason.EXHAUSTED, 503),
    ]:
        e = event(name, key=key)
        dlq.add(e, reason, status=status, response_body="{}", error="")
        ids[key] = e["id"]
    return ids


def test_add_is_idempotent_per_event_and_counts_by_reason(dlq: DeadLetters, r: redis.Redis) -> None:
    e = event()
    _, new = dlq.add(e, Reason.HTTP_5XX, status=503)
    _, again = dlq.add(e, Reason.EXHAUSTED, status=503)
    assert (new, again) == (True, False)
    assert dlq.count() == 1
    counts = {k.decode(): int(v) for k, v in r.hgetall(contract.DLQ_REASON_COUNTS).items()}
    assert counts == {"http_5xx": 0, "exhausted": 1}


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(event="order_placed"), {"bad", "gone"}),
        (Selection(status="4xx"), {"bad", "gone", "auth"}),
        (Selection(status="404"), {"gone"}),
        (Selection(status="5xx"), {"down"}),
        (Selection(reason="auth"), {"auth"}),
        (Selection(event="product_view", reason="exhausted"), {"down"}),
        # Times are offsets from now, made absolute when the test runs (not at collection).
        (Selection(since=60), set()),
        (Selection(until=60), {"bad", "gone", "auth", "down"}),
        (Selection(until=-60), set()),
    ],
)
def test_filters(
    dlq: DeadLetters, mixed: dict[str, str], selection: Selection, expected: set[str]
) -> None:
    now = time.time()
    selection = Selection(
        **{
            **selection.__dict__,
            "since": None if selection.since is None else now + selection.since,
            "until": None if selection.until is None else now + selection.until,
        }
    )
    names = {v: k for k, v in mixed.items()}
    assert {names[e["event_id"]] for e in dlq.select(selection)} == expected


def test_replay_with_a_filter_moves_only_the_match_with_fresh_attempts(
    dlq: DeadLetters, mixed: dict[str, str], r: redis.Redis
) -> None:
    assert dlq.replay(Selection(reason="http_4xx")) == 2
    back = queued(r)
    assert {e["id"] for e in back} == {mixed["bad"], mixed["gone"]}
    assert {(e["attempts"], len(e["history"])) for e in back} == {(0, 0)}
    assert {e["event_id"] for e in dlq.list()} == {mixed["auth"], mixed["down"]}
    counts = {k.decode(): int(v) for k, v in r.hgetall(contract.DLQ_REASON_COUNTS).items()}
    assert counts["http_4xx"] == 0 and counts["auth"] == 1


def test_replay_by_id_ignores_unknown_ids(
    dlq: DeadLetters, mixed: dict[str, str], r: redis.Redis
) -> None:
    assert dlq.replay(ids=[mixed["auth"], "no-such-id"]) == 1
    assert [e["id"] for e in queued(r)] == [mixed["auth"]]


def test_replay_of_many_is_chunked_and_reports_progress(dlq: DeadLetters, r: redis.Redis) -> None:
    pipe_events = [event(i=i) for i in range(2500)]
    for e in pipe_events:
        dlq.add(e, Reason.EXHAUSTED, status=503)
    progress: list[int] = []
    assert dlq.replay(on_progress=progress.append) == 2500
    assert progress == [1000, 2000, 2500]
    assert dlq.count() == 0 and r.hlen(contract.DLQ_ENTRIES) == 0
    assert sorted(e["data"]["i"] for e in queued(r)) == list(range(2500))


def test_purge_needs_yes_without_a_terminal(
    cli: CliRunner, dlq: DeadLetters, mixed: dict[str, str]
) -> None:
    refused = cli.invoke(main, ["dlq", "purge", "--all", "--reason", "auth"])
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert dlq.count() == 4
    done = cli.invoke(main, ["dlq", "purge", "--all", "--reason", "auth", "--yes"])
    assert done.exit_code == 0 and "purged 1 dead letter(s)" in done.output
    assert mixed["auth"] not in {e["event_id"] for e in dlq.list()}


def test_dry_run_changes_nothing(
    cli: CliRunner, dlq: DeadLetters, mixed: dict[str, str], r: redis.Redis
) -> None:
    for verb in ("replay", "purge"):
        result = cli.invoke(main, ["dlq", verb, "--all", "--status", "4xx", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert f"would {verb} 3 dead letter(s)" in result.output
        assert mixed["bad"] in result.output and mixed["down"] not in result.output
    assert dlq.count() == 4 and r.llen(contract.QUEUE) == 0


def test_list_table_json_and_filters_from_the_cli(cli: CliRunner, mixed: dict[str, str]) -> None:
    table = cli.invoke(main, ["dlq", "list", "--event", "order_placed"])
    assert table.exit_code == 0
    assert mixed["bad"] in table.output and mixed["auth"] not in table.output
    as_json = json.loads(cli.invoke(main, ["dlq", "list", "--json", "--reason", "auth"]).output)
    assert [e["event_id"] for e in as_json] == [mixed["auth"]]
    recent = json.loads(cli.invoke(main, ["dlq", "list", "--json", "--since", "1h"]).output)
    assert len(recent) == 4
    bad = cli.invoke(main, ["dlq", "list", "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since 'yesterday'" in bad.output
    bad_status = cli.invoke(main, ["dlq", "list", "--status", "4x"])
    assert bad_status.exit_code == 2 and "--status" in bad_status.output


def test_show_prints_the_event_and_every_attempt(cli: CliRunner, mixed: dict[str, str]) -> None:
    result = cli.invoke(main, ["dlq", "show", mixed["down"]])
    assert result.exit_code == 0
    assert "reason:          exhausted" in result.output
    assert '"event": "product_view"' in result.output
    assert "1. " in result.output and "status=503" in result.output
    missing = cli.invoke(main, ["dlq", "show", "nope"])
    assert missing.exit_code == 1 and "no dead letter with id nope" in missing.output


def test_export_edit_import_round_trip(
    cli: CliRunner, dlq: DeadLetters, r: redis.Redis, tmp_path: Path
) -> None:
    # Given an event LimeChat refused because of its data
    e = event("order_placed", total="$199")
    dlq.add(e, Reason.HTTP_4XX, status=422, response_body='{"error": "total must be a number"}')
    path = tmp_path / "refused.jsonl"
    # When the operator exports it, fixes the payload and imports it
    assert cli.invoke(main, ["dlq", "export", str(path), "--reason", "http_4xx"]).exit_code == 0
    entry = json.loads(path.read_text())
    entry["event"]["data"]["total"] = 199
    path.write_text(json.dumps(entry) + "\n")
    result = cli.invoke(main, ["dlq", "import", str(path)])
    # Then it is queued with its id, the fix and fresh attempts, and has left the DLQ
    assert result.exit_code == 0, result.output
    assert "queued 1 event(s); 1 of them left the DLQ" in result.output
    [back] = queued(r)
    assert (back["id"], back["data"], back["attempts"]) == (e["id"], {"total": 199}, 0)
    assert dlq.count() == 0


def test_import_refuses_a_bad_edit_and_changes_nothing(
    cli: CliRunner, dlq: DeadLetters, r: redis.Redis, tmp_path: Path
) -> None:
    e = event()
    dlq.add(e, Reason.HTTP_4XX, status=400)
    path = tmp_path / "x.jsonl"
    cli.invoke(main, ["dlq", "export", str(path)])
    entry = json.loads(path.read_text())
    entry["event"]["phone"] = "5673412780"  # the country code got lost in editing
    path.write_text(json.dumps(entry) + "\n" + "{broken\n")
    result = cli.invoke(main, ["dlq", "import", str(path)])
    assert result.exit_code == 2
    assert "line 1: phone:" in result.output and "line 2, column 2" in result.output
    assert dlq.count() == 1 and r.llen(contract.QUEUE) == 0


def test_export_bodies_feed_send_file(
    cli: CliRunner, mixed: dict[str, str], r: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "bodies.jsonl"
    assert cli.invoke(main, ["dlq", "export", str(path), "--bodies"]).exit_code == 0
    bodies = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(bodies) == 4 and set(bodies[0]) == {"distinct_id", "phone", "event", "data"}
    sent = cli.invoke(main, ["send", "--file", str(path)])
    assert sent.exit_code == 0 and "enqueued 4 event(s)" in sent.output
    # What was queued: the four events as the DLQ held them, under new ids
    back = queued(r)
    assert [request_body(e) for e in back] == bodies
    assert not {e["id"] for e in back} & set(mixed.values())


def test_import_refuses_an_event_id_on_two_lines_naming_both(
    cli: CliRunner, dlq: DeadLetters, r: redis.Redis, tmp_path: Path
) -> None:
    # Given an export of two dead letters, and a file where one of them was copied and
    # edited twice (two fixes of the same event would overwrite each other)
    one, two = event(n=1), event(n=2)
    dlq.add(one, Reason.HTTP_4XX, status=422)
    dlq.add(two, Reason.HTTP_4XX, status=422)
    path = tmp_path / "refused.jsonl"
    assert cli.invoke(main, ["dlq", "export", str(path)]).exit_code == 0
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    copy = json.loads(json.dumps(first))
    first["event"]["data"]["fix"] = "a"
    copy["event"]["data"]["fix"] = "b"
    path.write_text("".join(json.dumps(e) + "\n" for e in [first, second, copy]))
    # When it is imported
    result = cli.invoke(main, ["dlq", "import", str(path)])
    # Then the whole file is refused, naming both lines, and nothing is queued or removed
    assert result.exit_code == 2, result.output
    assert f"{path} lines 1 and 3: both are event {one['id']}" in result.output
    assert "nothing was imported" in result.output
    assert r.llen(contract.QUEUE) == 0 and dlq.count() == 2


def test_retention_trims_by_count_and_age_and_counts_it(
    dlq: DeadLetters, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(10):
        dlq.add(event(i=i), Reason.EXHAUSTED, status=503)
    assert dlq.trim(max_entries=6, max_age=None, now=time.time()) == 4
    assert [(rec.levelname, rec.getMessage()) for rec in caplog.records] == [
        (
            "WARNING",
            "retention: trimmed 4 dead letters (LIMECHAT_DLQ_MAX_ENTRIES=6, "
            "LIMECHAT_DLQ_MAX_AGE_SECONDS=None)",
        )
    ]
    assert dlq.trim(max_entries=6, max_age=None, now=time.time()) == 0  # nothing more to do
    assert dlq.count() == 6
    kept = sorted(e["event"]["data"]["i"] for e in dlq.list())
    assert kept == [4, 5, 6, 7, 8, 9]  # the oldest went first
    assert dlq.trim(max_entries=None, max_age=3600, now=time.time() + 7200) == 6
    assert dlq.count() == 0
    assert int(r.hget(contract.STATS_COUNTERS, "dlq_trimmed") or 0) == 10
    counts = {k.decode(): int(v) for k, v in r.hgetall(contract.DLQ_REASON_COUNTS).items()}
    assert counts == {"exhausted": 0}


def test_concurrent_trims_leave_exactly_the_limits(
    dlq: DeadLetters, r: redis.Redis, redis_url: str
) -> None:
    # Given three processes, each with its own client, ready to trim together (five times)
    trials, ctx = 5, multiprocessing.get_context("spawn")
    start, done = ctx.Barrier(4), ctx.Barrier(4)
    now = time.time()
    limits = [(1000, 2699.5, now)] * trials  # keep 1,000, none older than 2,699.5 s
    procs = [
        ctx.Process(target=trim_on_each_start, args=(redis_url, start, done, trials, limits))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    try:
        for trial in range(trials):
            # Given 3,000 dead letters a second apart, the first 301 older than the age limit
            r.flushdb()
            fill(r, 3000, first_at=now - 3000)
            # When the three apply both limits at the same moment
            start.wait(60)
            done.wait(60)
            # Then exactly the newest 1,000 are left, and exactly 2,000 counted as trimmed
            assert dlq.count() == 1000, f"trial {trial}: {dlq.count()} left"
            kept = sorted(e["event"]["data"]["i"] for e in dlq.select())
            assert kept == list(range(2000, 3000)), f"trial {trial}"
            assert int(r.hget(contract.STATS_COUNTERS, "dlq_trimmed") or 0) == 2000
            counts = {k.decode(): int(v) for k, v in r.hgetall(contract.DLQ_REASON_COUNTS).items()}
            assert counts == {"exhausted": 1000}
    finally:
        start.abort()
        done.abort()
        for p in procs:
            p.join(30)
            if p.exitcode is None:
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0]


# --- reading while entries leave: the cursor ---


def test_entries_leaving_the_front_mid_read_never_make_select_skip_one_that_stayed(
    dlq: DeadLetters, r: redis.Redis
) -> None:
    # Given 2,500 dead letters (pages of 1,000), a reader half-way through the first page
    fill(r, 2500)
    seen: list[int] = []
    for entry in dlq.select():
        seen.append(entry["event"]["data"]["i"])
        if len(seen) == 500:
            # When a trim removes the oldest 1,200 (some read, some not yet)
            assert dlq.trim(max_entries=1300, max_age=None, now=time.time()) == 1200
    # Then every entry that stayed is read, once, in order (the first page was already read)
    assert seen == list(range(1000)) + list(range(1200, 2500))


def test_the_cursor_is_exact_across_entries_dead_lettered_at_the_same_time(
    dlq: DeadLetters, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given pages of 4 and 13 dead letters, 9 of them at the very same time
    monkeypatch.setattr("worker.deadletter.CHUNK", 4)
    for i, at in enumerate([999.0] * 2 + [1000.0] * 9 + [1001.0] * 2):
        dlq.add(event(i=i), Reason.EXHAUSTED, status=503, now=at)
    order = [m.decode() for m in r.zrange(contract.DLQ_INDEX, 0, -1)]  # by time, then by id
    # When one reads them all, removing each entry just read and the oldest left
    seen = []
    for entry in dlq.select():
        seen.append(entry["event_id"])
        oldest = r.zrange(contract.DLQ_INDEX, 0, 0)[0].decode()
        dlq.purge(ids=[entry["event_id"], oldest])
    # Then it read those that stayed when it came to them (all here: it never ran ahead of
    # the purges), each once, in time-then-id order: nothing skipped, nothing repeated
    assert seen == order
    assert dlq.count() == 0


def test_the_cursor_passes_more_ties_than_a_page_holds(
    dlq: DeadLetters, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.deadletter.CHUNK", 3)
    for i in range(10):
        dlq.add(event(i=i), Reason.EXHAUSTED, status=503, now=1000.0)
    dlq.add(event(i=10), Reason.EXHAUSTED, status=503, now=1001.0)
    ordered = [m.decode() for m in r.zrange(contract.DLQ_INDEX, 0, -1)]
    assert [e["event_id"] for e in dlq.select()] == ordered
    assert [e["event_id"] for e in dlq.select(limit=5)] == ordered[:5]
    assert dlq.replay() == 11
    assert sorted(e["id"] for e in queued(r)) == sorted(ordered)  # each once


def test_an_export_running_while_a_trim_removes_the_front_skips_none_that_stayed(
    dlq: DeadLetters, r: redis.Redis, redis_url: str
) -> None:
    # Given 3,000 dead letters of about 1 kB each, and an export writing them to a pipe we
    # leave unread: it has read its first page and waits for us to read what it wrote
    fill(r, 3000, pad="x" * 1000)
    env = {**os.environ, "REDIS_URL": redis_url}
    export = subprocess.Popen(
        [sys.executable, "-m", "worker", "dlq", "export"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert export.stdout is not None
        first = json.loads(export.stdout.readline())
        # When a trim removes the oldest 1,500 (the first page's 1,000 and 500 beyond it)
        assert dlq.trim(max_entries=1500, max_age=None, now=time.time()) == 1500
        rest = [json.loads(line) for line in export.stdout]
        _, err = export.communicate(timeout=60)
    finally:
        export.kill()
        export.wait()
    # Then the export holds every entry that stayed, each once, oldest first
    assert export.returncode == 0, err
    exported = [e["event"]["data"]["i"] for e in [first, *rest]]
    assert set(range(1500, 3000)) <= set(exported)
    assert exported == sorted(set(exported))
    assert f"exported {len(exported)} dead letter(s)" in err


@pytest.mark.parametrize(
    "command",
    [
        ["dlq", "export", "{path}"],
        ["dlq", "replay", "--all", "--dry-run"],
        ["dlq", "purge", "--all", "--dry-run"],
    ],
)
def test_export_and_previews_hold_a_page_not_the_selection(
    cli: CliRunner, r: redis.Redis, tmp_path: Path, command: list[str]
) -> None:
    """Memory measured as the peak of what Python allocated (tracemalloc) during the command:
    four times the entries must not take four times the memory."""

    def peak(entries: int) -> int:
        r.flushdb()
        fill(r, entries, pad="x" * 1000)
        args = [a.format(path=tmp_path / f"{entries}.jsonl") for a in command]
        tracemalloc.start()
        try:
            result = cli.invoke(main, args)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.exit_code == 0, result.output
        return top

    peak(100)  # (first imports and connections out of the way)
    small, large = peak(1200), peak(4800)
    assert large < 1.5 * small, f"{small / 1e6:.1f} MB for 1,200, {large / 1e6:.1f} MB for 4,800"
    if "export" in command:
        assert len((tmp_path / "4800.jsonl").read_text().splitlines()) == 4800


# --- replays and imports read the delivered markers ---


@pytest.mark.parametrize("how", ["replay", "import"])
def test_a_replayed_or_imported_event_limechat_already_accepted_is_not_posted_again(
    how: str,
    cli: CliRunner,
    dlq: DeadLetters,
    r: redis.Redis,
    receiver: Sandbox,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    # Given two dead letters, one of which LimeChat accepted after all (a lost answer): its
    # delivered marker is set
    accepted, refused = event(n="accepted"), event(n="refused")
    for e in (accepted, refused):
        dlq.add(e, Reason.EXHAUSTED, status=503)
    r.set(contract.delivered_key(accepted["id"]), "1", ex=contract.DELIVERED_MARKER_TTL_SECONDS)
    # When the operator replays them (or exports and imports them) and a worker runs
    if how == "replay":
        result = cli.invoke(main, ["dlq", "replay", "--all"])
    else:
        path = tmp_path / "dlq.jsonl"
        assert cli.invoke(main, ["dlq", "export", str(path)]).exit_code == 0
        result = cli.invoke(main, ["dlq", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert {e["id"] for e in queued(r)} == {accepted["id"], refused["id"]}
    with running_worker(env) as worker:
        wait_for(lambda: receiver.accepted(), 30, "a delivery")
        # (the message is acknowledged once both are handled: nothing waiting, nothing held)
        wait_for(
            lambda: r.llen(contract.QUEUE) == 0 and r.hlen(contract.UNACKED) == 0,
            30,
            "the message to be acknowledged",
        )
    # Then only the event without a marker reached LimeChat, once; the other was skipped
    assert [(req.body["data"], status) for req, status in receiver.requests] == [
        ({"n": "refused"}, 200)
    ]
    assert worker.saw(f"skipped evt={accepted['id']} event=order_placed: already delivered")
    assert dlq.count() == 0
