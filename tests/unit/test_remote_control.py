"""Remote control's pure parts: which items kombu and Celery can take, node names, the setting."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest
from celery.worker.control import Panel

from producer import ConfigError
from tests.helpers import ROOT
from worker.pidbox import command_problem, is_control_queue, problem, readable
from worker.remote import REFUSED, nodename, refuse_unsafe_commands
from worker.settings import Settings

CREDS = {"LIMECHAT_ACCESS_TOKEN": "tok", "LIMECHAT_ACCOUNT_ID": "acct"}


def broadcast(body: Any, **extra: Any) -> dict[str, Any]:
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"clock": 3},
        "properties": {"delivery_tag": "t", "body_encoding": "base64"},
    }
    message.update(extra)
    return message


def test_control_queues_are_celerys_mailbox_only() -> None:
    assert is_control_queue("limechat-events-12@host.celery.pidbox")
    assert is_control_queue(b"0c1f.reply.celery.pidbox")
    assert is_control_queue("0c1f.reply.celery.pidbox\x06\x163")
    assert not is_control_queue("limechat:events")
    assert not is_control_queue("pidbox.limechat:events")


def test_what_celery_sends_passes() -> None:
    ping = broadcast(
        {
            "method": "ping",
            "arguments": {},
            "destination": None,
            "pattern": None,
            "matcher": None,
            "ticket": "e1",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "e1"},
        }
    )
    assert problem(ping) is None and command_problem(ping) is None
    assert readable(json.dumps(ping)) == ping


@pytest.mark.parametrize(
    "message",
    [
        5,
        [],
        {"properties": 1},
        {"properties": {}},
        {"properties": {"delivery_tag": "t"}, "headers": [1]},
        {"properties": {"delivery_tag": "t", "delivery_info": "x"}},
        {"properties": {"delivery_tag": "t", "body_encoding": "rot13"}, "body": "x"},
        {"properties": {"delivery_tag": "t", "body_encoding": "base64"}, "body": "!!"},
        broadcast({"method": "ping"}, **{"content-type": "application/x-python-serialize"}),
    ],
)
def test_what_kombu_cannot_make_a_message_of_is_refused(message: Any) -> None:
    assert problem(message) is not None


@pytest.mark.parametrize(
    "message",
    [
        broadcast([]),
        broadcast({}),
        broadcast({"method": 5}),
        broadcast({"method": "ping", "arguments": []}),
        broadcast({"method": "ping", "reply_to": "q"}),
        broadcast({"method": "ping", "reply_to": {"exchange": 1, "routing_key": "k"}}),
        broadcast({"method": "ping", "destination": 5}),
        broadcast({"method": "ping"}, headers={"clock": "x"}),
    ],
)
def test_what_celery_cannot_dispatch_is_refused(message: dict[str, Any]) -> None:
    assert problem(message) is None
    assert command_problem(message) is not None


def test_undecodable_json_is_not_readable() -> None:
    for item in (b"\xff", b"{", b'{"__type__": "uuid", "__value__": {"hex": 5}}'):
        assert readable(item) is None


def test_commands_that_would_send_twice_or_lose_events_are_refused() -> None:
    # (Celery's rate_limit holds messages past the visibility timeout: they are sent twice)
    assert {"revoke", "terminate", "rate_limit", "time_limit", "cancel_consumer"} <= set(REFUSED)
    refuse_unsafe_commands()
    for name in REFUSED:
        answer = Panel.data[name](state=None, task_name="limechat.deliver", rate_limit="1/m")
        assert answer["error"].startswith(f"limechat-events refuses {name}"), answer


def test_each_process_gets_a_node_name_of_its_own() -> None:
    assert nodename("limechat-events@web1", 42) == "limechat-events-42@web1"
    assert nodename("limechat-events-42@web1", 42) == "limechat-events-42@web1"  # (once only)


def test_remote_control_is_on_unless_switched_off() -> None:
    assert Settings.from_env(CREDS).remote_control_on
    for off in ("off", "OFF", "false", "0", "no"):
        assert not Settings.from_env({**CREDS, "LIMECHAT_REMOTE_CONTROL": off}).remote_control_on
    with pytest.raises(ConfigError, match="LIMECHAT_REMOTE_CONTROL='maybe' must be on or off"):
        Settings.from_env({**CREDS, "LIMECHAT_REMOTE_CONTROL": "maybe"})


def test_the_tools_app_imports_without_credentials_threads_or_connections() -> None:
    # (REDIS_URL points at a port nothing listens on: importing must not care)
    code = (
        "import threading, worker.celery_app as m; "
        "assert threading.active_count() == 1, threading.enumerate(); "
        "print(m.app.conf.broker_transport)"
    )
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/3"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "worker.transport:Transport"
