"""``limechat-events`` as a user types it: sending, files, the DLQ, refusing bad set-ups."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from producer import contract
from producer.envelope import new_event
from tests.helpers import ROOT, run_cli
from tests.unit.test_files import SEED_ORDER_PLACED
from worker.cli import main
from worker.deadletter import DeadLetters
from worker.outcome import Reason

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


@pytest.fixture
def cli(redis_url: str) -> CliRunner:
    return CliRunner(env={"REDIS_URL": redis_url})


def test_send_one_event(cli: CliRunner, r: redis.Redis) -> None:
    result = cli.invoke(
        main, ["send", "order_placed", "--phone", PHONE, "--data", '{"order_id": "98765"}']
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip()) == 36  # the event id
    assert r.llen(contract.QUEUE) == 1


def test_the_seeds_broken_order_placed_data_is_refused_with_where_and_why(
    cli: CliRunner, r: redis.Redis
) -> None:
    start, end = SEED_ORDER_PLACED.index('"data": ') + 8, SEED_ORDER_PLACED.rindex("}")
    data = SEED_ORDER_PLACED[start:end]
    result = cli.invoke(main, ["send", "order_placed", "--phone", PHONE, "--data", data])
    assert result.exit_code == 2
    assert "--data is not valid JSON, line 5 column 9: Expecting ',' delimiter" in result.output
    # CliRunner keeps a traceback out of the output: an exception that escaped is here instead
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert r.llen(contract.QUEUE) == 0


def test_send_refuses_an_event_name_with_spaces_and_suggests_one(cli: CliRunner) -> None:
    result = cli.invoke(main, ["send", "Order Placed", "--phone", PHONE])
    assert result.exit_code == 2
    assert "'order_placed'" in result.output


def test_send_file_with_a_bad_line_enqueues_nothing_and_names_the_line(
    cli: CliRunner, r: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    good = json.dumps({"event": "product_view", "phone": PHONE, "data": {"p": 1}})
    path.write_text(
        f"{good}\n\n{good[:-1]}\n{good}\n"
        + json.dumps({"event": "order placed", "phone": PHONE})
        + "\n"
    )
    result = cli.invoke(main, ["send", "--file", str(path)])
    assert result.exit_code == 2
    assert f"{path} line 3, column {len(good)}: Expecting ',' delimiter" in result.output
    assert f"{path} line 5: event:" in result.output
    assert "nothing was enqueued" in result.output
    assert r.llen(contract.QUEUE) == 0

    skipped = cli.invoke(main, ["send", "--file", str(path), "--skip-invalid"])
    assert skipped.exit_code == 1
    assert "enqueued 2 event(s), skipped 2" in skipped.output
    assert r.llen(contract.QUEUE) == 1  # one batch message


def test_send_file_from_stdin(cli: CliRunner, r: redis.Redis) -> None:
    from producer.envelope import request_body
    from tests.integration.test_dlq import queued

    bodies = [
        {"distinct_id": str(i), "phone": PHONE, "event": "e", "data": {"i": i}} for i in range(5)
    ]
    lines = "".join(json.dumps(body) + "\n" for body in bodies)
    result = cli.invoke(main, ["send", "--file", "-"], input=lines)
    assert result.exit_code == 0, result.output
    assert "enqueued 5 event(s)" in result.output
    assert [request_body(e) for e in queued(r)] == bodies  # each line, once, in order


def test_dlq_list_json_is_an_array_of_entries(cli: CliRunner, r: redis.Redis) -> None:
    assert json.loads(cli.invoke(main, ["dlq", "list", "--json"]).output) == []
    event = new_event("order_placed", PHONE, PHONE, {}, None)
    DeadLetters(r).add(event, Reason.HTTP_4XX, status=400, response_body='{"error": "bad"}')
    entries = json.loads(cli.invoke(main, ["dlq", "list", "--json"]).output)
    assert [(e["event_id"], e["reason"], e["status"]) for e in entries] == [
        (event["id"], "http_4xx", 400)
    ]
    table = cli.invoke(main, ["dlq", "list"]).output
    assert event["id"] in table and "http_4xx" in table


def test_dlq_replay_needs_ids_or_all(cli: CliRunner) -> None:
    result = cli.invoke(main, ["dlq", "replay"])
    assert result.exit_code == 2 and "--all" in result.output


def test_the_worker_refuses_to_start_without_credentials_naming_them() -> None:
    result = run_cli({"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:6379/15"}, "worker")
    assert result.returncode == 2
    assert "missing LIMECHAT_ACCESS_TOKEN and LIMECHAT_ACCOUNT_ID" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_setting_names_the_variable() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LIMECHAT_ACCESS_TOKEN": "t",
        "LIMECHAT_ACCOUNT_ID": "a",
        "LIMECHAT_MAX_ATTEMPTS": "lots",
    }
    result = run_cli(env, "worker")
    assert result.returncode == 2
    assert "LIMECHAT_MAX_ATTEMPTS='lots' is not a whole number" in result.stderr


def listed_commands(help_text: str) -> dict[str, str]:
    """The ``Commands:`` section of a ``--help``: each command and its one-line description."""
    section = help_text.split("\nCommands:\n", 1)[1]
    rows = [line.split(None, 1) for line in section.splitlines() if line.startswith("  ")]
    return {row[0]: row[1] if len(row) > 1 else "" for row in rows}


def readme_commands() -> set[tuple[str, ...]]:
    """The commands of the README's command line: ``("send",)``, ``("dlq", "list")``..."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## The command line", 1)[1].split("```", 2)[1]
    found = (
        re.match(r"limechat-events ([a-z][a-z-]*)(?: ([a-z]+)\b)?", line)
        for line in block.split("\n")
    )
    commands = {tuple(g for g in m.groups() if g) for m in found if m}
    return commands | {command[:1] for command in commands}  # the groups too: dlq, retries


def test_help_describes_every_command() -> None:
    """Every command of the README's command line is listed by ``--help``, with a description."""
    commands = readme_commands()
    assert len(commands) >= 15, commands  # 8 commands; dlq's 6 and retries' 1
    for command in sorted(commands):
        *group, name = command
        result = CliRunner().invoke(main, [*group, "--help"])
        assert result.exit_code == 0, (command, result.output)
        description = listed_commands(result.output).get(name, "")
        assert len(description) > 10, (command, description, result.output)
