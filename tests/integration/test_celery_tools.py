"""Celery's own tools against real workers: ``celery -A worker.celery_app inspect ping|active|
stats``, ``status`` and ``control``, with remote control on (the default) and off.

Each test starts a real ``limechat-events worker`` on the test's Redis database, delivering to a
real local receiver, and runs the ``celery`` command in a subprocess with the same environment,
as an operator would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from kombu import Consumer, Exchange, Queue
from kombu import Producer as Producer_

from producer import Producer, contract, wire
from producer.envelope import new_event
from tests.chaos.receiver import Action, Answer, ChaosReceiver, Received
from tests.helpers import ROOT, WorkerProcess, wait_for, worker_env
from tests.observe import child_pids
from worker.celery_app import create_control_app
from worker.pidbox import readable

pytestmark = pytest.mark.integration

PHONE = "+915673412780"
PONG = {"limechat-events-1@host": {"ok": "pong"}}
NODE = re.compile(r"limechat-events-(\d+)@")
#: ``--timeout`` of every command: how long ``celery`` collects replies (it always waits all of
#: it). A worker process answers in a few milliseconds (3-15 ms measured on the 2-core VM), so
#: 2 s is ample for every reply to count, and also long enough to catch one that should not come.
REPLY_WINDOW = "2"


def celery(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``celery -A worker.celery_app ARGS`` in a subprocess, as documented in the README."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def nodes_in(output: str) -> set[int]:
    """The worker process ids named in ``output`` (``limechat-events-<pid>@host``)."""
    return {int(pid) for pid in NODE.findall(output)}


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Closed: the receiver holds every request until it is set (the test ends: it opens)."""
    release = threading.Event()
    yield release
    release.set()


@pytest.fixture
def held_receiver(gate: threading.Event) -> Iterator[ChaosReceiver]:
    def hold(_: Received) -> Action:
        gate.wait(60)
        return Answer()

    receiver = ChaosReceiver(hold)
    yield receiver
    receiver.stop()


def start(env: dict[str, str], processes: int = 1) -> WorkerProcess:
    worker = WorkerProcess(env, ["-m", "worker", "worker", "--processes", str(processes)])
    worker.start(wait_ready=False)
    wait_for(
        lambda: worker.text().count("worker ready") == processes or worker.proc.poll() is not None,  # type: ignore[union-attr]
        60,
        "the worker processes to start",
    )
    assert worker.proc is not None and worker.proc.poll() is None, worker.text()[-3000:]
    return worker


def test_inspect_and_status_answer_from_every_worker_process_while_it_delivers(
    redis_url: str,
    r: redis.Redis,
    producer: Producer,
    held_receiver: ChaosReceiver,
    gate: threading.Event,
) -> None:
    env = worker_env(redis_url, held_receiver.url, LOG_LEVEL="INFO", LIMECHAT_TIMEOUT_SECONDS="60")
    env["LIMECHAT_VISIBILITY_TIMEOUT"] = "120"
    worker = start(env, processes=2)
    try:
        assert worker.proc is not None
        children = child_pids(worker.proc.pid)
        assert len(children) == 2
        # Given an event in flight (the receiver holds it)
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        wait_for(lambda: held_receiver.in_progress == 1, 30, "a delivery in flight")

        # ping: every process answers, by a name of its own
        ping = celery(env, "inspect", "ping", "--timeout", REPLY_WINDOW)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert nodes_in(ping.stdout) == children, ping.stdout
        assert ping.stdout.count("pong") == 2

        # status lists both
        status = celery(env, "status", "--timeout", REPLY_WINDOW)
        assert status.returncode == 0, status.stdout + status.stderr
        assert nodes_in(status.stdout) == children
        assert "2 nodes online" in status.stdout

        # active: the task in flight, shown by its argsrepr, never the event's payload
        active = celery(env, "inspect", "active", "--timeout", REPLY_WINDOW, "--json")
        assert active.returncode == 0, active.stdout + active.stderr
        replies: dict[str, list[dict[str, Any]]] = json.loads(active.stdout)
        assert nodes_in(" ".join(replies)) == children
        running = [task for tasks in replies.values() for task in tasks]
        assert [task["name"] for task in running] == [contract.TASK_DELIVER]
        assert "1 event(s), first" in str(running[0]["args"])
        assert PHONE not in active.stdout

        # stats: each process' pool and broker, without the Redis password or our token
        stats = celery(env, "inspect", "stats", "--timeout", REPLY_WINDOW, "--json")
        assert stats.returncode == 0, stats.stdout + stats.stderr
        by_node = json.loads(stats.stdout)
        assert nodes_in(" ".join(by_node)) == children
        assert all(s["pool"]["max-concurrency"] == 4 for s in by_node.values())
        assert env["LIMECHAT_ACCESS_TOKEN"] not in stats.stdout

        # And the workers keep delivering while being inspected
        gate.set()
        pings: list[int] = []
        # When the workers were asked: the last REPLY_WINDOW seconds of each command (the
        # broadcast goes out once the command has started; it then waits that long for replies)
        windows: list[tuple[float, float]] = []

        def inspect_three_times() -> None:
            for _ in range(3):
                pings.append(celery(env, "inspect", "ping", "--timeout", REPLY_WINDOW).returncode)
                ended = time.monotonic()
                windows.append((ended - float(REPLY_WINDOW), ended))

        inspecting = threading.Thread(target=inspect_three_times)
        inspecting.start()
        sent = 0  # (events spread over the inspections, not all sent before the first)
        while sent < 20 or inspecting.is_alive():
            sent += 1
            producer.send_event("order_placed", phone=PHONE, data={"seq": sent})
            time.sleep(0.25)
        wait_for(
            lambda: held_receiver.delivered_seqs() == set(range(sent + 1)),
            60,
            "every event delivered",
        )
        inspecting.join(120)
        assert pings == [0, 0, 0]
        during = [
            r.seq
            for r in held_receiver.snapshot()
            if r.delivered and any(began <= r.at <= ended for began, ended in windows)
        ]
        assert len(during) >= 5, f"only {during} delivered while an inspect ran: {windows}"
        assert worker.proc.poll() is None
    finally:
        gate.set()
        worker.stop()


def test_with_remote_control_off_nothing_answers_and_events_are_still_delivered(
    redis_url: str, producer: Producer
) -> None:
    receiver = ChaosReceiver()
    env = worker_env(redis_url, receiver.url, LOG_LEVEL="INFO", LIMECHAT_REMOTE_CONTROL="off")
    worker = start(env)
    try:
        ping = celery(env, "inspect", "ping", "--timeout", REPLY_WINDOW)
        assert ping.returncode != 0
        assert not nodes_in(ping.stdout + ping.stderr)
        assert "No nodes replied" in ping.stdout + ping.stderr
        status = celery(env, "status", "--timeout", REPLY_WINDOW)
        assert status.returncode != 0
        producer.send_event("order_placed", phone=PHONE, data={"seq": 1})
        wait_for(lambda: receiver.delivered_seqs() == {1}, 30, "the event delivered")
    finally:
        worker.stop()
        receiver.stop()


def test_revoke_is_refused_and_the_revoked_id_is_still_delivered(
    redis_url: str, r: redis.Redis
) -> None:
    receiver = ChaosReceiver()
    env = worker_env(redis_url, receiver.url, LOG_LEVEL="INFO")
    worker = start(env)
    try:
        message = json.loads(wire.encode_message([_event(7)]))
        task_id = message["headers"]["id"]
        revoke = celery(env, "control", "revoke", task_id, "--timeout", REPLY_WINDOW)
        assert "limechat-events refuses revoke" in revoke.stdout + revoke.stderr, (
            revoke.stdout + revoke.stderr
        )
        # (stock Celery acknowledges a revoked message unrun: its events would be lost)
        r.lpush(contract.QUEUE, json.dumps(message))
        wait_for(lambda: receiver.delivered_seqs() == {7}, 30, "the revoked id delivered")
        cancel = celery(
            env, "control", "cancel_consumer", contract.QUEUE, "--timeout", REPLY_WINDOW
        )
        assert "limechat-events refuses cancel_consumer" in cancel.stdout + cancel.stderr
        r.lpush(contract.QUEUE, wire.encode_message([_event(8)]))
        wait_for(lambda: receiver.delivered_seqs() == {7, 8}, 30, "still taking its queue")
    finally:
        worker.stop()
        receiver.stop()


def command(body: Any, headers: Any = None, content_type: str = "application/json") -> str:
    """A broadcast as kombu's Mailbox writes it, carrying ``body``."""
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-type": content_type,
            "content-encoding": "utf-8",
            "headers": headers or {},
            "properties": {"delivery_tag": "t", "body_encoding": "base64"},
        }
    )


HOSTILE_BROADCASTS: list[bytes | str] = [
    b"\xff\xfe not json",
    "5",
    "[]",
    "null",
    '{"__type__": "uuid", "__value__": 5}',
    '{"__type__": "uuid", "__value__": {"hex": 5}}',  # (AttributeError in kombu's decoder)
    '{"__type__": "bytes", "__value__": 5}',
    '{"properties": 1}',
    '{"properties": {"delivery_tag": "t"}, "headers": [1]}',
    '{"properties": {"delivery_tag": "t", "body_encoding": "rot13"}, "body": "x"}',
    '{"properties": {"delivery_tag": "t", "body_encoding": "base64"}, "body": "!!!"}',
    # readable by kombu, but not a command Celery can dispatch (it would reset its channel)
    *[command(body) for body in ([], {}, {"method": 5}, {"method": "ping", "reply_to": 5})],
    command({"method": "ping"}, headers={"clock": "x"}),
    command({"method": "ping"}, content_type="application/x-python-serialize"),
]


def test_hostile_items_on_the_pidbox_channel_and_lists_do_not_stop_a_worker(
    redis_url: str, r: redis.Redis, producer: Producer
) -> None:
    receiver = ChaosReceiver()
    env = worker_env(redis_url, receiver.url, LOG_LEVEL="INFO")
    worker = start(env)
    try:
        assert worker.proc is not None
        (pid,) = child_pids(worker.proc.pid) or {worker.proc.pid}
        db = int(urlsplit(redis_url).path.strip("/") or 0)
        channel = f"/{db}.celery.pidbox"  # (kombu's fanout_prefix: per database)
        first = celery(env, "inspect", "ping", "--timeout", REPLY_WINDOW, "--json")
        assert first.returncode == 0, first.stdout + first.stderr
        (node,) = json.loads(first.stdout)
        for item in HOSTILE_BROADCASTS:
            assert int(r.publish(channel, item)) >= 1, "no worker subscribed to " + channel
            r.lpush(f"{node}.celery.pidbox", item)
        wait_for(lambda: worker.saw("dropped"), 30, "the hostile broadcasts dropped")

        ping = celery(env, "inspect", "ping", "--timeout", REPLY_WINDOW)
        assert ping.returncode == 0, ping.stdout + ping.stderr + worker.text()[-3000:]
        assert nodes_in(ping.stdout) == {pid}
        producer.send_event("order_placed", phone=PHONE, data={"seq": 1})
        wait_for(lambda: receiver.delivered_seqs() == {1}, 30, "the event delivered")
        assert worker.proc.poll() is None
        assert r.zcard(contract.DLQ_INDEX) == 0  # (not events: nothing dead-lettered)
        assert "Unrecoverable error" not in worker.text()
        assert "Control command error" not in worker.text()  # (Celery resets its channel then)
    finally:
        worker.stop()
        receiver.stop()


def test_replies_are_read_as_they_are_and_unreadable_ones_dropped(
    redis_url: str, r: redis.Redis
) -> None:
    """What ``celery inspect`` reads: a reply list, through our transport (not vetted as events)."""
    control = create_control_app({"REDIS_URL": redis_url})
    exchange = Exchange("reply.celery.pidbox", type="direct")
    queue = Queue("0c1f.reply.celery.pidbox", exchange, routing_key="0c1f", auto_delete=True)
    got: list[Any] = []
    with control.connection_for_read() as conn:
        consumer = Consumer(conn, [queue], callbacks=[lambda body, _: got.append(body)])
        consumer.accept = {"application/json"}
        consumer.no_ack = True
        with consumer:
            for item in HOSTILE_BROADCASTS:
                r.lpush(queue.name, item)
            with Producer_(conn) as publish:
                publish.publish(
                    PONG,
                    exchange=exchange,
                    routing_key="0c1f",
                    serializer="json",
                )
            deadline = time.monotonic() + 30
            while PONG not in got:
                assert time.monotonic() < deadline, got
                with contextlib.suppress(TimeoutError, socket.timeout):
                    conn.drain_events(timeout=1)
    # (the readable items reach the asker as they are: Celery's reply collector checks them)
    assert got[-1] == PONG and len(got) == 1 + sum(1 for i in HOSTILE_BROADCASTS if readable(i))
    assert r.llen(queue.name) == 0
    assert r.zcard(contract.DLQ_INDEX) == 0 and r.llen(contract.QUEUE) == 0
    assert r.zcard(contract.TAKING) == 0  # (not moved through a taking list)


def test_the_tools_app_is_not_a_worker(redis_url: str) -> None:
    env = worker_env(redis_url, "http://127.0.0.1:9/unused")
    result = celery(env, "worker", "--pool=solo")
    assert result.returncode != 0
    assert "start workers with `limechat-events worker`" in result.stderr


def _event(seq: int) -> Any:
    return new_event("order_placed", PHONE, PHONE, {"seq": seq}, None)
