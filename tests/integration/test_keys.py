"""Every key lives under ``limechat:`` (README, *How it works*), except the bookkeeping keys
kombu writes when a worker declares the queue (``_kombu.binding.limechat:events`` and
``_kombu.binding_permanent.limechat:events``) and, with remote control on, its mailbox
(``_kombu.binding.celery.pidbox``, ``_kombu.binding_deadlines``).

A worker goes through every outcome (delivered, retried and promoted, dead-lettered, paused by
a 429, rate limited, an idempotency key remembered); then ``SCAN`` shows nothing else, while it
runs and after it stopped.
"""

from __future__ import annotations

import pytest
import redis

from producer import Producer
from tests.chaos.support import nothing_held
from tests.helpers import TEST_ACCOUNT, running_worker, wait_for, worker_env
from worker.sandbox import Reply, Request, Sandbox
from worker.schedule import parked
from worker.stats import snapshot

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def foreign_keys(r: redis.Redis) -> list[str]:
    keys = [k.decode() for k in r.scan_iter(count=1000)]
    assert keys, "SCAN found nothing at all"
    kombu = {f"_kombu.{table}.limechat:events" for table in ("binding", "binding_permanent")}
    kombu |= {"_kombu.binding.celery.pidbox", "_kombu.binding_deadlines"}  # (remote control)
    return sorted(k for k in keys if not k.startswith("limechat:") and k not in kombu)


def test_every_key_written_is_under_the_limechat_prefix(
    redis_url: str, r: redis.Redis, producer: Producer, receiver: Sandbox
) -> None:
    # Given a receiver that refuses one event, fails another once and rate-limits a third once
    failed_once: set[str] = set()

    def answers(req: Request) -> Reply | None:
        name = req.body["event"]
        if name == "refused":
            return Reply(400, {"error": "bad data"})
        if name in ("flaky", "limited") and name not in failed_once:
            failed_once.add(name)
            if name == "flaky":
                return Reply(503, {"error": "busy"})
            return Reply(429, {"error": "slow down"}, {"Retry-After": "1"})
        return None

    receiver.responder = answers
    env = worker_env(redis_url, receiver.url, LIMECHAT_RATE_LIMIT="20/s")
    with running_worker(env):
        # When events go through every outcome
        producer.send_event("order_placed", phone=PHONE, idempotency_key="order-1")
        producer.send_event("order_placed", phone=PHONE, idempotency_key="order-1")
        producer.send_events(
            [
                {"event": name, "phone": PHONE, "account": TEST_ACCOUNT}
                for name in ("flaky", "refused", "limited", "product_view")
            ]
        )
        wait_for(lambda: len(receiver.accepted()) == 4, 30, "four deliveries")
        wait_for(lambda: nothing_held(r) and not parked(r, 10), 20, "the worker to finish its work")
        counters = snapshot(r, None, None)["counters"]
        assert (counters["delivered"], counters["dead_lettered"]) == (4, 1), counters
        assert counters["retried"] == 2, counters  # flaky's 503 and limited's 429
        # Then every key is under the prefix, while the worker runs
        assert foreign_keys(r) == []
    # and after it stopped
    assert foreign_keys(r) == []
