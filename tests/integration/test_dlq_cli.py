"""What the README promises about ``limechat-events dlq``, one test each, on the real Redis:
--limit, show --json, replay and purge of given ids, export to stdout, time filters, an
interrupted replay, and the retention limits a real worker applies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
import redis
from click.testing import CliRunner

from producer import contract
from tests.helpers import ROOT, running_worker, wait_for
from tests.integration.test_dlq import event, fill, queued
from worker.cli import main
from worker.deadletter import DeadLetters
from worker.outcome import Reason

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(redis_url: str) -> CliRunner:
    return CliRunner(env={"REDIS_URL": redis_url})


@pytest.fixture
def dlq(r: redis.Redis) -> DeadLetters:
    return DeadLetters(r)


@pytest.fixture
def five(dlq: DeadLetters) -> list[str]:
    """Five dead letters a minute apart, oldest first; their ids."""
    ids = []
    start = time.time() - 600
    for i in range(5):
        e = event(i=i)
        dlq.add(e, Reason.HTTP_4XX, status=400, response_body='{"error": "no"}', now=start + 60 * i)
        ids.append(e["id"])
    return ids


def listed(cli: CliRunner, *args: str) -> list[str]:
    result = cli.invoke(main, ["dlq", "list", "--json", *args])
    assert result.exit_code == 0, result.output
    return [e["event_id"] for e in json.loads(result.stdout)]


def test_list_limit_gives_the_oldest_n(cli: CliRunner, five: list[str]) -> None:
    assert listed(cli, "--limit", "2") == five[:2]
    table = cli.invoke(main, ["dlq", "list", "--limit", "3"])
    assert table.exit_code == 0
    rows = table.stdout.splitlines()[1:]  # (after the header)
    assert [row.split()[0] for row in rows] == five[:3]
    assert listed(cli, "--limit", "9") == five


def test_show_json_is_the_stored_entry(cli: CliRunner, dlq: DeadLetters, five: list[str]) -> None:
    result = cli.invoke(main, ["dlq", "show", five[1], "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown == dlq.get(five[1])
    assert (shown["event"]["data"], shown["status"], shown["reason"]) == ({"i": 1}, 400, "http_4xx")


def test_replay_of_given_ids_queues_exactly_those(
    cli: CliRunner, dlq: DeadLetters, r: redis.Redis, five: list[str]
) -> None:
    result = cli.invoke(main, ["dlq", "replay", five[3], five[0], "no-such-id"])
    assert result.exit_code == 0, result.output
    assert "replayed 2 event(s)" in result.stdout
    back = queued(r)
    assert sorted((e["id"], e["data"]["i"], e["attempts"]) for e in back) == sorted(
        [(five[0], 0, 0), (five[3], 3, 0)]
    )
    assert [e["event_id"] for e in dlq.select()] == [five[1], five[2], five[4]]


def test_purge_of_given_ids_deletes_exactly_those(
    cli: CliRunner, dlq: DeadLetters, r: redis.Redis, five: list[str]
) -> None:
    result = cli.invoke(main, ["dlq", "purge", five[2], five[4], "--yes"])
    assert result.exit_code == 0, result.output
    assert "purged 2 dead letter(s)" in result.stdout
    assert [e["event_id"] for e in dlq.select()] == [five[0], five[1], five[3]]
    assert r.llen(contract.QUEUE) == 0
    assert int(r.hget(contract.DLQ_REASON_COUNTS, "http_4xx") or 0) == 3


def test_export_without_a_file_writes_json_lines_to_stdout(
    cli: CliRunner, dlq: DeadLetters, five: list[str]
) -> None:
    every = cli.invoke(main, ["dlq", "export"])
    assert every.exit_code == 0, every.output
    assert [json.loads(line) for line in every.stdout.splitlines()] == [dlq.get(i) for i in five]
    assert "exported 5 dead letter(s)" in every.stderr  # (on stderr: stdout is the data)
    recent = cli.invoke(main, ["dlq", "export", "--since", "9.5m", "--bodies"])
    assert recent.exit_code == 0, recent.output
    bodies = [json.loads(line) for line in recent.stdout.splitlines()]
    assert [b["data"]["i"] for b in bodies] == [1, 2, 3, 4]  # 9, 8, 7 and 6 minutes old
    assert set(bodies[0]) == {"distinct_id", "phone", "event", "data"}


def test_time_filters_take_iso_times_and_relative_ones(cli: CliRunner, dlq: DeadLetters) -> None:
    # Given dead letters from 10 days, 3 days, 1 hour and 10 minutes ago
    now = time.time()
    ago = {"10d": 10 * 86400, "3d": 3 * 86400, "1h": 3600, "10m": 600}
    ids = {}
    for name, seconds in ago.items():
        e = event(name=name)
        dlq.add(e, Reason.EXHAUSTED, status=503, now=now - seconds)
        ids[name] = e["id"]

    def iso(seconds_ago: float) -> str:
        when = datetime.fromtimestamp(now - seconds_ago, timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    def names(*args: str) -> list[str]:
        by_id = {v: k for k, v in ids.items()}
        return [by_id[i] for i in listed(cli, *args)]

    assert names("--since", "7d") == ["3d", "1h", "10m"]
    assert names("--since", "30m") == ["10m"]
    assert names("--until", "30m") == ["10d", "3d", "1h"]
    assert names("--until", "7d") == ["10d"]
    assert names("--since", "4d", "--until", "30m") == ["3d", "1h"]
    assert names("--since", iso(4 * 86400), "--until", iso(1800)) == ["3d", "1h"]
    assert names("--until", iso(5 * 86400)[:-1]) == ["10d"]  # no zone: UTC
    assert names("--since", iso(2 * 3600).replace("Z", "+00:00")) == ["1h", "10m"]
    # (the same clock time 5.5 h west of Greenwich is 3.5 h from now)
    assert names("--since", iso(2 * 3600).replace("Z", "-05:30")) == []


def test_a_replay_killed_midway_loses_nothing_and_queues_nothing_twice(
    dlq: DeadLetters, r: redis.Redis, redis_url: str
) -> None:
    # Given 20,000 dead letters
    total = 20_000
    fill(r, total)
    every = {m.decode() for m in r.zrange(contract.DLQ_INDEX, 0, -1)}
    assert len(every) == total
    # When a replay of all of them is SIGKILLed once it has moved some
    env = {**os.environ, "REDIS_URL": redis_url}
    replay = subprocess.Popen(
        [sys.executable, "-m", "worker", "dlq", "replay", "--all"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: dlq.count() < total or r.llen(contract.QUEUE),
            60,
            "the replay to start moving",
            interval=0.002,
        )
        replay.send_signal(signal.SIGKILL)
    finally:
        replay.kill()
        replay.wait()
    assert replay.returncode == -signal.SIGKILL
    # Then each event is either still in the DLQ or on the queue: never both, never neither,
    # never queued twice
    left = {m.decode() for m in r.zrange(contract.DLQ_INDEX, 0, -1)}
    on_queue = Counter(e["id"] for e in queued(r))
    assert left and on_queue, "the replay was not interrupted midway"
    assert max(on_queue.values()) == 1
    assert not left & set(on_queue)
    assert left | set(on_queue) == every
    assert r.hlen(contract.DLQ_ENTRIES) == len(left)
    assert int(r.hget(contract.DLQ_REASON_COUNTS, "exhausted") or 0) == len(left)


def test_a_worker_applies_the_retention_limits_from_the_environment_and_warns(
    dlq: DeadLetters, r: redis.Redis, env: dict[str, str]
) -> None:
    # Given ten dead letters, a second apart, the oldest three dead-lettered over an hour ago
    now = time.time()
    fill(r, 3, first_at=now - 7200)
    fill(r, 7, first_at=now - 60, recent=True)
    # When a worker runs with at most five, at most an hour old
    env = {**env, "LIMECHAT_DLQ_MAX_ENTRIES": "5", "LIMECHAT_DLQ_MAX_AGE_SECONDS": "3600"}
    with running_worker(env) as worker:
        wait_for(lambda: worker.saw("retention: trimmed"), 30, "the retention warning")
    # Then the five newest are left, five are counted as trimmed, and it said so at WARNING
    assert [e["event"]["data"]["i"] for e in dlq.select()] == [2, 3, 4, 5, 6]
    assert {e["event"]["data"].get("recent") for e in dlq.select()} == {True}
    assert int(r.hget(contract.STATS_COUNTERS, "dlq_trimmed") or 0) == 5
    [line] = [line for line in worker.output if "retention: trimmed" in line]
    assert " WARNING limechat_events.deadletter: retention: trimmed 5 dead letters " in line
    assert "LIMECHAT_DLQ_MAX_ENTRIES=5" in line and "LIMECHAT_DLQ_MAX_AGE_SECONDS=3600" in line


def test_replay_and_import_put_limechat_batch_size_events_in_a_message(
    redis_url: str, r: redis.Redis, dlq: DeadLetters, tmp_path: object
) -> None:
    for i in range(30):
        dlq.add(event(i=i), Reason.EXHAUSTED)
    small = CliRunner(env={"REDIS_URL": redis_url, "LIMECHAT_BATCH_SIZE": "10"})
    exported = small.invoke(main, ["dlq", "export"])
    assert small.invoke(main, ["dlq", "replay", "--all"]).exit_code == 0
    assert r.llen(contract.QUEUE) == 3
    r.delete(contract.QUEUE)
    for line in exported.stdout.splitlines():  # (back in the DLQ, to import them)
        entry = json.loads(line)
        dlq.add(entry["event"], Reason.EXHAUSTED)
    result = small.invoke(main, ["dlq", "import", "-"], input=exported.stdout)
    assert result.exit_code == 0, result.output
    assert r.llen(contract.QUEUE) == 3
    bad = CliRunner(env={"REDIS_URL": redis_url, "LIMECHAT_BATCH_SIZE": "many"})
    refused = bad.invoke(main, ["dlq", "replay", "--all"])
    assert refused.exit_code == 2 and "LIMECHAT_BATCH_SIZE" in refused.output


def test_export_bodies_skips_malformed_dead_letters_and_says_so(
    cli: CliRunner, dlq: DeadLetters
) -> None:
    # (a malformed dead letter holds what arrived, not an event: it has no request body)
    dlq.add({"id": "junk-1", "event": "(malformed)", "raw": "not json"}, Reason.MALFORMED)  # type: ignore[typeddict-item]
    good = event(i=1)
    dlq.add(good, Reason.HTTP_4XX, status=400)
    result = cli.invoke(main, ["dlq", "export", "--bodies"])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert json.loads(line)["data"] == good["data"]
    assert "skipped 1 that hold no event" in result.stderr


def test_import_refuses_a_file_whose_last_line_has_a_bad_time_and_queues_nothing(
    cli: CliRunner, r: redis.Redis, tmp_path: object
) -> None:
    lines = []
    for i in range(1001):
        entry = {"event_id": f"imp-{i}", "event": {**event(i=i), "id": f"imp-{i}"}}
        lines.append(json.dumps(entry))
    lines[-1] = lines[-1].replace('"created_at": ', '"created_at": NaN, "was": ')
    result = cli.invoke(main, ["dlq", "import", "-"], input="\n".join(lines) + "\n")
    assert result.exit_code == 2, result.output
    assert "line 1001" in result.stderr and "created_at" in result.stderr
    assert r.llen(contract.QUEUE) == 0
