"""Running it in production: Sentry, logs, stats, retries list, ping; and no secret anywhere."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sentry_sdk
from click.testing import CliRunner
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from producer import Producer
from producer.envelope import new_event
from tests.helpers import (
    TEST_ACCOUNT,
    TEST_TOKEN,
    SentryIngest,
    WorkerProcess,
    run_cli,
    running_worker,
    wait_for,
    worker_env,
)
from tests.integration.faulty_worker import PHONE as LOGGED
from tests.integration.faulty_worker import READY
from worker.app import build_deliverer
from worker.cli import main
from worker.deadletter import DeadLetters
from worker.reporting import init_sentry, report_dead_letter
from worker.sandbox import Reply, Request, Sandbox
from worker.settings import Settings

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


class CapturingTransport(Transport):
    """Keeps what Sentry would send, sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        return [
            item.payload.json
            for env in self.envelopes
            for item in env.items
            if item.type == "event" and item.payload.json is not None
        ]


@pytest.fixture
def sentry() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to a client that sends nothing


def scripted(req: Request) -> Reply | None:
    """Answers by event name: the scenarios of a day in production."""
    name = req.body["event"]
    if name == "refused":
        return Reply(400, {"error": "bad data"})
    if name == "unauthorised":
        return Reply(401, {"error": "token expired"})
    if name == "down":
        return Reply(503, {"error": "maintenance"})
    return None


def take_queued(r: redis.Redis) -> list[Any]:
    """Take every event off the queue, as a worker would receive them."""
    events: list[Any] = []
    while raw := r.rpop("limechat:events"):
        events.extend(json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0])
    return events


def in_process_settings(redis_url: str, api_url: str) -> Settings:
    return Settings(
        access_token=TEST_TOKEN,
        account_id=TEST_ACCOUNT,
        redis_url=redis_url,
        api_url=api_url,
        max_attempts=2,
        retry_base_seconds=0.0,
        retry_max_seconds=0.0,
        rate_limit="off",
        sentry_dsn="http://public@127.0.0.1:9/1",
    )


def test_sentry_gets_one_event_per_dead_letter_tagged_grouped_and_scrubbed(
    sentry: CapturingTransport,
    r: redis.Redis,
    redis_url: str,
    receiver: Sandbox,
    producer: Producer,
) -> None:
    receiver.responder = scripted
    settings = in_process_settings(redis_url, receiver.url)
    assert init_sentry(settings, transport=sentry)
    deliverer = build_deliverer(settings, r, on_dead_letter=report_dead_letter)
    events = [
        new_event(n, PHONE, PHONE, {"phone_copy": PHONE}, None)
        for n in ("order_placed", "refused", "unauthorised", "down")
    ]
    deliverer.deliver_batch(events)
    # "down" failed once and was parked; promoted, its second (last) attempt dead-letters it.
    assert deliverer.schedule.promote_due() == 1
    deliverer.deliver_batch(take_queued(r))
    # A redelivered event that is dead-lettered again is not reported again.
    deliverer.deliver_batch([events[1]])
    sentry_sdk.flush()

    reported = sentry.events()
    assert len(reported) == 3
    by_reason = {e["tags"]["reason"]: e for e in reported}
    assert sorted(by_reason) == ["auth", "exhausted", "http_4xx"]
    auth = by_reason["auth"]
    assert auth["level"] == "error"
    assert by_reason["http_4xx"]["level"] == by_reason["exhausted"]["level"] == "warning"
    assert auth["tags"]["event_name"] == "unauthorised" and auth["tags"]["status"] == "401"
    # (sent with no account: tagged with the account it went to, the default one)
    assert {e["tags"]["account"] for e in reported} == {TEST_ACCOUNT}
    assert auth["fingerprint"] == ["limechat-dead-letter", "unauthorised", "auth"]
    assert by_reason["exhausted"]["contexts"]["dead_letter"]["attempts"] == 2
    text = json.dumps(reported)
    assert TEST_TOKEN not in text
    assert PHONE not in text and "5673412780" not in text


def test_the_scrubber_removes_the_token_and_masks_phones() -> None:
    from worker.reporting import make_scrubber

    clean = make_scrubber("tok-123")
    event = {"message": "sent tok-123 for +915673412780", "extra": {"x": ["tok-123", 5]}}
    assert clean(event) == {
        "message": "sent [Filtered] for +91******2780",
        "extra": {"x": ["[Filtered]", 5]},
    }


def test_no_secret_anywhere_after_a_run_through_every_outcome(
    producer: Producer, receiver: Sandbox, redis_url: str, r: redis.Redis
) -> None:
    # Given a worker logging at DEBUG as JSON, reporting to a local Sentry
    receiver.responder = scripted
    ingest = SentryIngest()
    env = worker_env(
        redis_url,
        receiver.url,
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        SENTRY_DSN=ingest.dsn,
        LIMECHAT_MAX_ATTEMPTS="2",
    )
    flaky = [Reply(500, {"error": "hiccup"})]
    receiver.responder = lambda req: (
        flaky.pop() if req.body["event"] == "flaky" and flaky else scripted(req)
    )
    cli = CliRunner(env={"REDIS_URL": redis_url, "LIMECHAT_ACCOUNT_ID": TEST_ACCOUNT})
    try:
        with running_worker(env) as worker:
            # When events go through success, retry, 401, 400, exhaustion, then a replay
            for name in ("order_placed", "flaky", "unauthorised", "refused", "down"):
                producer.send_event(name, phone=PHONE, data={"note": f"call {PHONE}"})
            wait_for(lambda: DeadLetters(r).count() == 3, 30, "three dead letters")
            wait_for(lambda: len(receiver.accepted()) == 2, 30, "two deliveries")
            replay = cli.invoke(main, ["dlq", "replay", "--all", "--reason", "auth"])
            assert replay.exit_code == 0, replay.output
            assert "replayed 1 event(s)" in replay.output
            wait_for(
                lambda: worker.text().count('"reason": "auth"') >= 2,
                30,
                "the replayed event dead-lettered again",
            )
            wait_for(lambda: ingest.bodies, 10, "Sentry to receive events")
            stats = cli.invoke(main, ["stats", "--json"])
            dlq_dump = cli.invoke(main, ["dlq", "list", "--json"])
    finally:
        ingest.stop()
    logs = worker.text()
    everything = {
        "worker log": logs,
        "Sentry": ingest.text(),
        "stats": stats.output,
        "dlq list": dlq_dump.output,
        "redis": json.dumps([str(r.dump(k)) for k in r.scan_iter()]),
    }
    # Then the token is nowhere, and phones are masked in logs and Sentry
    for where, text in everything.items():
        assert TEST_TOKEN not in text, f"the token leaked into the {where}"
    for where in ("worker log", "Sentry"):
        assert PHONE not in everything[where], f"a raw phone number is in the {where}"
        assert "+91******2780" in everything[where], where
    # ...and Sentry got one event per dead letter (the replayed one dead-lettered anew), none
    # for the retry
    reported = sorted(e["tags"]["reason"] for e in ingest.events())
    assert reported == ["auth", "auth", "exhausted", "http_4xx"], reported
    # and outcome lines are JSON with their fields
    outcomes = [
        json.loads(line) for line in logs.splitlines() if line.startswith("{") and '"evt"' in line
    ]
    kinds = {o["msg"] for o in outcomes}
    assert {"delivered", "retry scheduled", "dead-lettered"} <= kinds
    delivered = next(o for o in outcomes if o["msg"] == "delivered")
    assert {"evt", "event", "status", "attempt", "ms", "phone"} <= set(delivered)


def test_stats_counts_everything_and_shows_a_pause(
    r: redis.Redis, redis_url: str, receiver: Sandbox
) -> None:
    receiver.responder = scripted
    settings = in_process_settings(redis_url, receiver.url)
    settings = Settings(**{**settings.__dict__, "rate_limit": "10/s", "sentry_dsn": ""})
    deliverer = build_deliverer(settings, r)

    deliverer.deliver_batch(
        [
            new_event(n, PHONE, PHONE, {}, None)
            for n in ("order_placed", "order_placed", "refused", "down")
        ]
    )
    limiter = deliverer.limiter(deliverer.accounts.by_id[TEST_ACCOUNT])
    assert limiter is not None
    limiter.pause(30)
    cli = CliRunner(
        env={
            "REDIS_URL": redis_url,
            "LIMECHAT_ACCOUNT_ID": TEST_ACCOUNT,
            "LIMECHAT_RATE_LIMIT": "10/s",
        }
    )
    data = json.loads(cli.invoke(main, ["stats", "--json"]).output)
    assert data["counters"]["delivered"] == 2
    assert data["counters"]["retried"] == 1 and data["counters"]["dead_lettered"] == 1
    assert data["by_event"]["order_placed"] == {"delivered": 2}
    assert data["by_status"] == {"200": 2, "400": 1, "503": 1}
    assert data["dlq"] == {"depth": 1, "by_reason": {"http_4xx": 1}}
    assert data["retries"]["parked"] == 1
    assert 25 < data["rate_limit"]["paused_for_seconds"] <= 30
    text = cli.invoke(main, ["stats"]).output
    assert "PAUSED for" in text and "dlq:        1 (http_4xx 1)" in text

    listed = json.loads(cli.invoke(main, ["retries", "list", "--json"]).output)
    assert [(e["event"], e["attempts"], e["why"]) for e in listed] == [("down", 1, "status 503")]


def test_ping_for_health_checks(redis_url: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": redis_url,
        "LIMECHAT_ACCESS_TOKEN": "t",
        "LIMECHAT_ACCOUNT_ID": "a",
    }
    ok = run_cli(env, "ping")
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok")
    # An operator command: no credentials needed, but it says a worker would refuse to start.
    no_creds = CliRunner(env={"REDIS_URL": redis_url}).invoke(main, ["ping"])
    assert no_creds.exit_code == 0 and no_creds.stdout.strip() == "ok"
    assert "LIMECHAT_ACCESS_TOKEN" in no_creds.stderr
    bad_format = CliRunner(env={"REDIS_URL": redis_url, "LOG_FORMAT": "xml"}).invoke(main, ["ping"])
    assert bad_format.exit_code == 1 and "LOG_FORMAT" in bad_format.output  # (still checked)
    down = CliRunner(
        env={
            "REDIS_URL": "redis://:pw-secret@127.0.0.1:1/0",
            "LIMECHAT_ACCESS_TOKEN": "t",
            "LIMECHAT_ACCOUNT_ID": "a",
        }
    ).invoke(main, ["ping"])
    assert down.exit_code == 1 and "pw-secret" not in down.output and "***" in down.output


def test_log_lines_mask_phones_from_any_logger(redis_url: str, receiver: Sandbox) -> None:
    """In a real worker, a phone logged by Celery's loggers or the root logger comes out masked.

    tests/integration/faulty_worker.py logs one through a Celery logger and the root logger
    once the worker is ready.
    """
    env = worker_env(redis_url, receiver.url, LOG_LEVEL="INFO")
    worker = WorkerProcess(env, ["-m", "tests.integration.faulty_worker"]).start()
    try:
        wait_for(lambda: worker.saw(READY), 30, "the worker's lines with a phone in them")
    finally:
        worker.stop()
    lines = worker.text().splitlines()
    for source in ("celery logger", "root logger"):
        [line] = [line for line in lines if f"{source}: call" in line]
        assert line.endswith(f"{source}: call +91******2780"), line
    assert LOGGED not in worker.text()
