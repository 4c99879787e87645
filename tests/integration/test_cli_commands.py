"""The commands of the README's command-line section that no other test runs as a user would:
``send``'s options and exit codes, ``sandbox``, ``stats --watch``, ``retries list --limit``
and ``up`` (Redis started when none answers; no sandbox when credentials are set).

Every command runs as a real ``limechat-events`` process.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
from pathlib import Path

import pytest
import redis

from producer import Producer, ProducerSettings, contract
from tests.chaos.redis_server import free_port
from tests.helpers import ROOT, TEST_ACCOUNT, WorkerProcess, run_cli, wait_for, worker_env
from tests.observe import queued_events
from worker.sandbox import PATH, Reply, Request, Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def cli_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMECHAT_", "SENTRY_"))}
    env.update(REDIS_URL=redis_url, PYTHONUNBUFFERED="1", **extra)
    return env


# --- send ---------------------------------------------------------------------------------


def test_send_queues_distinct_id_account_and_idempotency_key_and_a_repeat_returns_the_first_id(
    redis_url: str, r: redis.Redis
) -> None:
    args = ["send", "order_placed", "--phone", PHONE, "--data", '{"order_id": "98765"}']
    args += ["--distinct-id", "user-42", "--account", "acct-7", "--idempotency-key", "order-98765"]
    first = run_cli(cli_env(redis_url), *args)
    assert first.returncode == 0, first.stderr
    event_id = first.stdout.strip()
    [event] = queued_events(r)
    assert event["id"] == event_id
    assert (event["distinct_id"], event["account"], event["phone"]) == ("user-42", "acct-7", PHONE)
    assert event["data"] == {"order_id": "98765"}

    again = run_cli(cli_env(redis_url), *args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == event_id
    assert [e["id"] for e in queued_events(r)] == [event_id]


def test_send_exits_1_when_redis_fails_and_2_on_bad_input(redis_url: str, r: redis.Redis) -> None:
    nobody = f"redis://:pw-9f2@127.0.0.1:{free_port()}/0"  # nothing listens there
    down = run_cli(cli_env(nobody), "send", "order_placed", "--phone", PHONE)
    assert down.returncode == 1, down.stderr
    assert down.stderr.startswith("error: ") and "Traceback" not in down.stderr
    assert "pw-9f2" not in down.stderr

    bad_inputs = [
        ["send", "order_placed", "--phone", "915673412780"],  # no country code
        ["send", "order_placed"],  # no phone
        ["send", "order_placed", "--phone", PHONE, "--data", "[1, 2]"],  # not an object
        ["send", "order_placed", "--phone", PHONE, "--account", ""],
        ["send", "order placed", "--phone", PHONE],
    ]
    for args in bad_inputs:
        result = run_cli(cli_env(redis_url), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, args
    misconfigured = run_cli(cli_env("http://127.0.0.1:6379/0"), "send", "e", "--phone", PHONE)
    assert misconfigured.returncode == 2 and "REDIS_URL" in misconfigured.stderr
    assert r.llen(contract.QUEUE) == 0


# --- sandbox ------------------------------------------------------------------------------


def post(host: str, port: int, token: str, account: str, body: dict[str, object]) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        headers = {
            "Content-Type": "application/json",
            "x-limechat-uat": token,
            "x-fb-account-id": account,
        }
        conn.request("POST", PATH, body=json.dumps(body), headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_sandbox_with_host_port_token_and_account_refuses_wrong_credentials_and_prints_events(
    redis_url: str,
) -> None:
    host, port = "127.0.0.2", free_port()  # (all of 127/8 is loopback on Linux)
    argv = ["-m", "worker", "sandbox", "--host", host, "--port", str(port)]
    argv += ["--token", "tok-1", "--account", "acct-1"]
    sandbox = WorkerProcess(cli_env(redis_url), argv).start(wait_ready=False)
    try:
        wait_for(lambda: sandbox.saw(f"listening on http://{host}:{port}{PATH}"), 20, "it listens")
        body: dict[str, object] = {
            "distinct_id": "u-1",
            "phone": PHONE,
            "event": "order_placed",
            "data": {"n": 1},
        }
        assert post(host, port, "wrong", "acct-1", body) == 401
        assert post(host, port, "tok-1", "acct-2", body) == 403
        assert post(host, port, "tok-1", "acct-1", body) == 200
        wait_for(
            lambda: sandbox.saw(
                f'sandbox: 200 event=order_placed distinct_id=u-1 phone={PHONE} data={{"n": 1}}'
            ),
            10,
            "the sandbox to print the event",
        )
        # --host: it listens there and nowhere else
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        sandbox.stop()
    printed = [line for line in sandbox.text().splitlines() if line.startswith("sandbox: 200")]
    assert len(printed) == 1, sandbox.text()


# --- stats --watch, retries list --limit ----------------------------------------------------


def test_stats_watch_refreshes_and_stops_on_ctrl_c_with_exit_0(
    redis_url: str, producer: Producer
) -> None:
    watch = WorkerProcess(cli_env(redis_url), ["-m", "worker", "stats", "--watch"])
    watch.start(wait_ready=False)
    try:
        wait_for(lambda: watch.saw("queue:      0 waiting"), 20, "the first screen")
        producer.send_event("order_placed", phone=PHONE)
        wait_for(lambda: watch.saw("queue:      1 waiting"), 20, "a refreshed screen")
        assert watch.proc is not None and watch.proc.poll() is None
        os.kill(watch.proc.pid, signal.SIGINT)  # what Ctrl-C sends
        code = watch.wait_exit(20)
    finally:
        watch.kill()
    assert code == 0, watch.text()
    assert "Traceback" not in watch.text() and "Aborted" not in watch.text()


def test_retries_list_limit_shows_the_soonest_parked_events(
    redis_url: str, producer: Producer, receiver: Sandbox
) -> None:
    # Given five events parked by 503s whose Retry-After puts them in a known order
    def busy(req: Request) -> Reply:
        return Reply(503, {"error": "busy"}, {"Retry-After": str(100 + req.body["data"]["seq"])})

    receiver.responder = busy
    env = worker_env(redis_url, receiver.url, LIMECHAT_RETRY_MAX_SECONDS="600")
    ids = {seq: producer.send_event("e", phone=PHONE, data={"seq": seq}) for seq in (3, 0, 4, 1, 2)}
    cli = cli_env(redis_url)
    worker = WorkerProcess(env).start()
    try:
        wait_for(
            lambda: len(json.loads(run_cli(cli, "retries", "list", "--json").stdout)) == 5,
            30,
            "five parked events",
        )
    finally:
        worker.stop()
    # When listing with --limit, then Only the soonest due ones are shown, soonest first
    listed = json.loads(run_cli(cli, "retries", "list", "--json", "--limit", "3").stdout)
    assert [e["event_id"] for e in listed] == [ids[0], ids[1], ids[2]]
    assert all(e["attempts"] == 1 and e["why"] == "status 503" for e in listed)
    table = run_cli(cli, "retries", "list", "--limit", "2")
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line and not line.startswith("EVENT ID")]
    assert [row.split()[0] for row in rows] == [ids[0], ids[1]]


# --- up -----------------------------------------------------------------------------------


def up_in(directory: Path, env: dict[str, str], sandbox_port: int) -> WorkerProcess:
    """``limechat-events up`` with ``directory`` as its working directory."""
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); os.chdir(sys.argv[2]);"
        " from worker.cli import main; main(sys.argv[3:], prog_name='limechat-events')"
    )
    argv = ["-c", code, str(ROOT), str(directory), "up", "--sandbox-port", str(sandbox_port)]
    return WorkerProcess(env, argv)


def test_up_starts_redis_with_an_append_only_file_in_the_working_directory(
    tmp_path: Path,
) -> None:
    # Given a REDIS_URL where nothing answers, and no credentials
    port, sandbox_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = cli_env(url, LIMECHAT_WORKER_PROCESSES="1")
    up = up_in(tmp_path, env, sandbox_port)
    started = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    server_pid: int | None = None
    try:
        # When `up` runs
        up.start()
        server_pid = int(started.info("server")["process_id"])
        # Then a redis-server answers there, with AOF on and its data in .limechat-dev/
        assert up.saw(f"starting redis-server on port {port}")
        assert started.config_get("appendonly") == {"appendonly": "yes"}
        data_dir = (tmp_path / ".limechat-dev").resolve()
        assert started.config_get("dir") == {"dir": str(data_dir)}
        assert any(p.name.startswith("appendonly") for p in data_dir.iterdir())
        # and the worker delivers through it to the sandbox
        sender = Producer(ProducerSettings(redis_url=url))
        sender.send_event("order_placed", phone=PHONE, data={"order_id": "98765"})
        sender.close()
        wait_for(lambda: up.saw("sandbox: 200 event=order_placed"), 30, "a delivery")
        assert up.proc is not None
        os.kill(up.proc.pid, signal.SIGTERM)
        assert up.wait_exit(30) == 0, up.text()[-3000:]
    finally:
        up.kill()
        if server_pid is not None:
            os.kill(server_pid, signal.SIGTERM)
            wait_for(lambda: not Path(f"/proc/{server_pid}").exists(), 20, "redis to stop")
        started.close()


def test_up_with_credentials_set_starts_no_sandbox(
    redis_url: str, receiver: Sandbox, producer: Producer
) -> None:
    sandbox_port = free_port()
    env = worker_env(redis_url, receiver.url, LIMECHAT_WORKER_PROCESSES="1")
    up = WorkerProcess(env, ["-m", "worker", "up", "--sandbox-port", str(sandbox_port)])
    up.start()
    try:
        producer.send_event("order_placed", phone=PHONE)
        # (the receiver checks the token and account: the credentials were used)
        wait_for(lambda: len(receiver.accepted()) == 1, 30, "a delivery to the real endpoint")
        assert receiver.accepted()[0].headers["x-fb-account-id"] == TEST_ACCOUNT
        assert not up.saw("SANDBOX MODE"), up.text()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", sandbox_port), timeout=5).close()
    finally:
        up.stop()
