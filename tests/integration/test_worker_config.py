"""The worker's configuration as the README's table promises it: a malformed value stops the
worker (exit 2) naming the variable; ``SENTRY_ENVIRONMENT`` reaches Sentry's events.
"""

from __future__ import annotations

import pytest
import redis

from producer import Producer
from tests.helpers import SentryIngest, run_cli, running_worker, wait_for, worker_env
from worker.sandbox import Reply, Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"

BAD_SETTINGS = [
    ("LIMECHAT_SCHEDULER_INTERVAL_SECONDS", "often"),
    ("LIMECHAT_SCHEDULER_INTERVAL_SECONDS", "0"),
    ("LIMECHAT_SCHEDULER_INTERVAL_SECONDS", "-1"),
    ("LIMECHAT_SCHEDULER_INTERVAL_SECONDS", "nan"),
    ("LIMECHAT_DLQ_MAX_ENTRIES", "lots"),
    ("LIMECHAT_DLQ_MAX_ENTRIES", "-1"),
    ("LIMECHAT_DLQ_MAX_ENTRIES", "1.5"),
    ("LIMECHAT_DLQ_MAX_AGE_SECONDS", "a week"),
    ("LIMECHAT_DLQ_MAX_AGE_SECONDS", "-60"),
    ("LIMECHAT_DLQ_MAX_AGE_SECONDS", "inf"),
    ("LOG_FORMAT", "xml"),
    ("LOG_FORMAT", "jsonl"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_a_malformed_setting_stops_the_worker_with_exit_2_naming_the_variable(
    redis_url: str, name: str, value: str
) -> None:
    env = worker_env(redis_url, "http://127.0.0.1:9/api/v1/cvf-events", **{name: value})
    result = run_cli(env, "worker", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and name in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "worker ready" not in result.stdout + result.stderr


def test_sentry_environment_tags_the_events_sent_to_sentry(
    redis_url: str, receiver: Sandbox, producer: Producer, r: redis.Redis
) -> None:
    # Given a worker reporting to a local Sentry, with SENTRY_ENVIRONMENT set
    ingest = SentryIngest()
    receiver.responder = lambda req: Reply(400, {"error": "bad data"})
    env = worker_env(
        redis_url, receiver.url, SENTRY_DSN=ingest.dsn, SENTRY_ENVIRONMENT="staging-eu-2"
    )
    try:
        with running_worker(env):
            # When an event is dead-lettered (reported to Sentry)
            producer.send_event("order_placed", phone=PHONE)
            events = wait_for(ingest.events, 30, "Sentry to receive the dead letter")
    finally:
        ingest.stop()
    # Then Sentry's event carries the environment
    [event] = events
    assert event["tags"]["reason"] == "http_4xx"
    assert event["environment"] == "staging-eu-2"
