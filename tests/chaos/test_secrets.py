"""Secrets: a Redis password and ``rediss://`` work, the password is never shown, phones masked.

Each test runs a ``redis-server`` of its own: with ``requirepass``, and for ``rediss://`` with a
throwaway CA and certificate made by ``openssl`` at test time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from producer import EnqueueError, Producer, ProducerSettings, contract, wire
from producer.envelope import new_event
from tests.helpers import (
    ROOT,
    TEST_ACCOUNT,
    TEST_TOKEN,
    run_cli,
    running_worker,
    wait_for,
    worker_env,
)

from .receiver import Action, Answer, ChaosReceiver, Received, Reset
from .redis_server import RedisServer, make_tls_files, redis_supports_tls
from .support import dead_letters, send_numbered, wait_settled

pytestmark = pytest.mark.integration

# URL-special characters on purpose: the URL carries it percent-encoded.
PASSWORD = "s3cr3t-P@ss/w0rd:never-shown"
PHONES = ["+915673412780", "+14155552671", "+442079460958"]
#: A uuid4 as 1 in 43 of them look: the first group all digits.
DIGITS_ID = "45262573-b2a6-4daf-a30d-d6cec568b360"


def password_forms(password: str) -> list[str]:
    return [password, quote(password, safe=""), quote(password)]


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "REDIS_URL": url,
        "PATH": "/usr/bin:/bin",
        "LIMECHAT_ACCESS_TOKEN": TEST_TOKEN,
        "LIMECHAT_ACCOUNT_ID": TEST_ACCOUNT,
    }
    return run_cli(env, *args)


def assert_never_shown(text: str, password: str = PASSWORD) -> None:
    for form in password_forms(password):
        assert form not in text, f"{form!r} appears in:\n{text[-2000:]}"


def round_trip(server: RedisServer, receiver: ChaosReceiver, password: str) -> str:
    """Producer, worker and CLI through ``server``; returns everything they printed."""
    url = server.url_with(password)
    producer = Producer(ProducerSettings(redis_url=url, batch_size=10))
    r = server.client()
    try:
        send_numbered(producer, range(20))
        with running_worker(worker_env(url, receiver.url)) as worker:
            tally = wait_settled(range(20), receiver, r, 30, "delivery through the password")
        assert (tally.delivered, tally.dead_lettered) == (20, 0)
        outputs = [worker.text()]
        for args in (["ping"], ["stats", "--json"], ["dlq", "list"]):
            result = cli(url, *args)
            assert result.returncode == 0, result.stderr
            outputs += [result.stdout, result.stderr]
        return "\n".join(outputs)
    finally:
        producer.close()
        r.close()


def test_a_redis_password_works_everywhere_and_is_never_shown(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver
) -> None:
    server = own_redis(password=PASSWORD)
    assert_never_shown(round_trip(server, chaos, PASSWORD))


def test_rediss_with_a_password_works_everywhere_and_is_never_shown(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver, tmp_path: Path
) -> None:
    if not redis_supports_tls():
        pytest.skip("this redis-server was built without TLS (--tls-port is refused)")
    server = own_redis(password=PASSWORD, tls=make_tls_files(tmp_path / "tls"))
    assert server.url.startswith("rediss://")
    assert_never_shown(round_trip(server, chaos, PASSWORD))


def test_a_wrong_password_or_a_dead_redis_fails_without_showing_the_password(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver, tmp_path: Path
) -> None:
    """EnqueueError, CLI errors and the worker's retry logs name Redis, never the password."""
    server = own_redis(password="the-right-one")
    wrong = server.url_with(PASSWORD)
    texts: list[str] = []
    # the producer
    producer = Producer(ProducerSettings(redis_url=wrong, enqueue_timeout=0.5))
    with pytest.raises(EnqueueError) as refused:
        producer.send_event("order_placed", phone=PHONES[0])
    producer.close()
    texts.append(str(refused.value))
    assert "127.0.0.1" in str(refused.value)
    # the CLI
    for args in (["send", "order_placed", "--phone", PHONES[0]], ["ping"], ["dlq", "list"]):
        result = cli(wrong, *args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        texts += [result.stdout, result.stderr]
    # a worker that cannot log in, then one whose Redis is gone: both keep trying, quietly
    texts.append(worker_output(wrong, chaos.url))
    server.stop()
    texts.append(worker_output(wrong, chaos.url))
    assert_never_shown("\n".join(texts))


def worker_output(url: str, api_url: str, seconds: float = 3.5) -> str:
    """What a worker prints in its first seconds against ``url``; it must not give up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "worker"],
        cwd=ROOT,
        env=worker_env(url, api_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    else:
        raise AssertionError(f"the worker gave up (exit {proc.returncode}):\n{out[-2000:]}")
    assert "127.0.0.1" in out, out[-2000:]  # it does say which Redis it cannot reach
    return out


def test_phone_numbers_are_masked_in_every_log_line(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """At DEBUG, through delivery, retries, resets and dead letters: no phone appears whole."""
    answers: dict[int, Action] = {
        0: Answer(500, {"error": "boom"}),
        1: Reset(),
        2: Answer(400, {"error": "bad"}),
    }
    seen: set[int] = set()

    def script(req: Received) -> Action:
        first = req.seq not in seen
        seen.add(req.seq)
        return answers.get(req.seq, Answer()) if first else Answer()

    chaos.script = script
    for seq, phone in enumerate(PHONES * 2):
        producer.send_event("order_placed", phone=phone, data={"seq": seq})
    with running_worker(worker_env(redis_url, chaos.url, LOG_LEVEL="DEBUG")) as worker:
        wait_settled(range(6), chaos, r, 30, "deliveries, retries and a dead letter")
    assert len(dead_letters(r)) == 1
    log = worker.text()
    assert "+91******2780" in log  # masked, and still there to tell events apart
    for phone in PHONES:
        digits = phone.lstrip("+")
        assert digits not in log, f"{phone} appears in the worker's log"


def test_event_ids_in_log_lines_are_not_masked_as_phone_numbers(
    chaos: ChaosReceiver, env: dict[str, str], r: redis.Redis
) -> None:
    """An id that starts with 8 digits is still written whole (here in a 'skipped' line)."""
    # Given a redelivered message whose event LimeChat already has (its marker is set)
    event = new_event("order_placed", PHONES[0], PHONES[0], {"seq": 0}, None, event_id=DIGITS_ID)
    message = json.loads(wire.encode_message([event]))
    message["properties"]["delivery_info"]["redelivered"] = True
    r.set(contract.delivered_key(DIGITS_ID), "1", ex=60)
    r.lpush(contract.QUEUE, json.dumps(message))
    # When a worker takes it
    with running_worker({**env, "LIMECHAT_API_URL": chaos.url}) as worker:
        wait_for(lambda: worker.saw("skipped evt="), 15, "the skip")
    # Then the line names the event by its id, whole
    assert not chaos.snapshot()
    assert f"skipped evt={DIGITS_ID}" in worker.text(), [
        line for line in worker.output if "skipped" in line
    ]
