"""``/metrics`` (worker/metrics.py), read with prometheus_client's own parser, against what a
real worker did and what ``limechat-events stats --json`` (its own process) shows.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from producer import Producer, contract, wire
from producer.envelope import new_event
from tests.helpers import TEST_ACCOUNT, WorkerProcess, run_cli, wait_for, worker_env
from worker import metering, metrics
from worker.sandbox import Reply, Request, Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(r: redis.Redis, account: str | None = TEST_ACCOUNT) -> Samples:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    text = metrics.collect(r, account).decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def summed(samples: Samples, name: str, **match: str) -> float:
    """The sum of ``name``'s samples whose labels include ``match``."""
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all((k, m) in labels for k, m in match.items())
    )


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (n, labels), _ in samples.items() if n == name}


def stats_json(redis_url: str) -> dict[str, Any]:
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin", "LIMECHAT_ACCOUNT_ID": TEST_ACCOUNT}
    shown = run_cli(env, "stats", "--json")
    assert shown.returncode == 0, shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def answers_by_name() -> Any:
    flaky_left = [Reply(503, {"error": "hiccup"})]

    def respond(req: Request) -> Reply | None:
        name = req.body["event"]
        if name == "flaky" and flaky_left:
            return flaky_left.pop()
        if name == "refused":
            return Reply(400, {"error": "bad data"})
        if name == "unauthorised":
            return Reply(401, {"error": "token expired"})
        if name == "throttled":
            return Reply(429, {"error": "slow down"}, {"Retry-After": "120"})
        return None

    return respond


def assert_matches_stats(samples: Samples, stats: dict[str, Any]) -> None:
    """Every number ``stats --json`` shows, as the scrape shows it."""
    assert value(samples, "limechat_queue_waiting") == stats["queue"]["waiting"]
    assert value(samples, "limechat_queue_in_flight") == stats["queue"]["in_flight"]
    assert value(samples, "limechat_retries_parked") == stats["retries"]["parked"]
    assert value(samples, "limechat_workers_alive") == stats["workers_alive"]
    dlq = {
        dict(labels)["reason"]: v
        for (n, labels), v in samples.items()
        if n == "limechat_dlq_entries" and v
    }
    assert dlq == stats["dlq"]["by_reason"]
    assert sum(dlq.values()) == stats["dlq"]["depth"]
    paused = value(samples, "limechat_rate_limit_paused", account=TEST_ACCOUNT)
    assert paused == (1 if stats["rate_limit"]["paused_for_seconds"] > 0 else 0)
    assert value(samples, "limechat_dlq_trimmed_total") == stats["counters"]["dlq_trimmed"]
    for outcome in metering.OUTCOMES:
        name = f"limechat_events_{outcome}_total"
        assert summed(samples, name) == stats["counters"][outcome], outcome
        for event, counts in stats["by_event"].items():
            assert summed(samples, name, event=event) == counts.get(outcome, 0), (event, outcome)
    by_status: Counter[str] = Counter()
    for outcome in metering.OUTCOMES:
        for status in label_values(samples, f"limechat_events_{outcome}_total", "status"):
            by_status[status] += int(
                summed(samples, f"limechat_events_{outcome}_total", status=status)
            )
    assert dict(by_status) == stats["by_status"]


def test_metrics_equal_stats_while_a_real_worker_delivers(
    producer: Producer, receiver: Sandbox, redis_url: str, r: redis.Redis
) -> None:
    # Given a worker with the rate limit on, and a receiver answering by event name
    receiver.responder = answers_by_name()
    env = worker_env(
        redis_url,
        receiver.url,
        LIMECHAT_MAX_ATTEMPTS="2",
        LIMECHAT_RATE_LIMIT="50/s",
        LIMECHAT_RETRY_MAX_SECONDS="120",
    )
    names = ["order_placed"] * 20 + ["product_view"] * 10 + ["flaky", "refused", "unauthorised"]
    started = time.time()
    worker = WorkerProcess(env).start()
    try:
        # When it delivers, retries and dead-letters, scraped all along
        producer.send_events([{"event": n, "phone": PHONE, "account": TEST_ACCOUNT} for n in names])
        seen: list[Samples] = []

        def finished() -> bool:
            seen.append(scrape(r))
            counted = seen[-1]
            return (
                summed(counted, "limechat_events_delivered_total") == 31
                and summed(counted, "limechat_events_dead_lettered_total") == 2
            )

        wait_for(finished, 60, "31 deliveries and 2 dead letters in the scrape")
        # ...then gets a 429 asking for two minutes (so the numbers hold still to be compared)
        producer.send_event("throttled", phone=PHONE)
        wait_for(
            lambda: value(scrape(r), "limechat_rate_limit_paused", account=TEST_ACCOUNT) == 1,
            30,
            "the 429 pause in the scrape",
        )
        wait_for(lambda: not r.hlen(contract.UNACKED) and not r.llen(contract.QUEUE), 30, "idle")
        # Then the scrape shows what `stats --json` shows, the worker still running
        stats = stats_json(redis_url)
        samples = scrape(r)
        assert stats["workers_alive"] == 1 and stats["retries"]["parked"] == 1, stats
        assert stats["rate_limit"]["paused_for_seconds"] > 0, stats
        assert_matches_stats(samples, stats)
        assert stats["counters"]["retried"] == 2  # flaky's 503 and throttled's 429
        assert (
            value(
                samples, "limechat_events_dead_lettered_total", event="unauthorised", status="401"
            )
            == 1
        )
        assert value(samples, "limechat_dlq_entries", reason="auth") == 1
    finally:
        worker.stop()

    # and counters never went down between scrapes while it worked
    for before, after in itertools.pairwise(seen):
        for key, v in before.items():
            if key[0].endswith(("_total", "_count", "_bucket")):
                assert after.get(key, 0) >= v, key
    # The histogram counts every delivery once, each within the time the test took
    count = value(samples, "limechat_delivery_latency_seconds_count")
    assert count == stats["counters"]["delivered"] == 31
    assert value(samples, "limechat_delivery_latency_seconds_bucket", le="+Inf") == count
    buckets = [
        value(samples, "limechat_delivery_latency_seconds_bucket", le=metering.bucket_label(b))
        for b in metering.LATENCY_BUCKETS
    ]
    assert buckets == sorted(buckets) and buckets[-1] == count
    latency_sum = value(samples, "limechat_delivery_latency_seconds_sum")
    assert 0 < latency_sum <= count * (time.time() - started)
    # and the console's per-minute series adds up to the counters
    series = metering.per_minute(r)
    assert len(series) == 60
    for outcome in metering.OUTCOMES:
        assert sum(m[outcome] for m in series) == stats["counters"][outcome], outcome


def test_oldest_waiting_age_and_queue_gauges_with_no_worker(
    producer: Producer, redis_url: str, r: redis.Redis
) -> None:
    # Given nothing consuming, a message whose events were enqueued 90 s and 30 s ago, behind
    # (to the left of) it a fresh one, and a retry whose last attempt was 10 s ago
    now = time.time()
    old = [new_event(n, PHONE, "d", {}, None, now=now - t) for n, t in (("a", 30), ("b", 90))]
    r.lpush(contract.QUEUE, wire.encode_message(old))
    producer.send_event("fresh", phone=PHONE)
    # Then the age is the next message's longest-waiting event's (90 s)
    samples = scrape(r)
    assert 90 <= value(samples, "limechat_queue_oldest_age_seconds") < 90 + 30
    assert_matches_stats(samples, stats_json(redis_url))
    assert value(samples, "limechat_queue_waiting") == 2

    # When that message is taken, the fresh one is next: its age is small
    r.rpop(contract.QUEUE)
    assert value(scrape(r), "limechat_queue_oldest_age_seconds") < 30

    # A retried event counts from its last attempt, not from its enqueue an hour ago
    r.delete(contract.QUEUE)
    retried = new_event("again", PHONE, "d", {}, None, now=now - 3600)
    retried["attempts"] = 1
    retried["history"] = [{"at": now - 10, "status": 503, "error": "", "ms": 5}]
    r.lpush(contract.QUEUE, wire.encode_message([retried], redelivered=True))
    assert 10 <= value(scrape(r), "limechat_queue_oldest_age_seconds") < 10 + 30

    # Something that is not our message reads 0 (the worker will dead-letter it), and so
    # does an empty queue
    r.rpush(contract.QUEUE, b"not json")
    assert value(scrape(r), "limechat_queue_oldest_age_seconds") == 0
    r.delete(contract.QUEUE)
    assert value(scrape(r), "limechat_queue_oldest_age_seconds") == 0

    # Nor does anything hostile at the front read as anything but 0: deep nesting, times too
    # large for a float or infinite (monitoring must work best when workers are down)
    hostile = [b"[" * 100_000]
    for created in ("1" + "0" * 400, "-1e999", "1e999"):
        event = new_event("odd", PHONE, "d", {}, None, now=now)
        message = json.loads(wire.encode_message([event]))
        body = json.dumps([[[{**event, "created_at": "TIME"}]], {}, {}])
        message["body"] = base64.b64encode(body.replace('"TIME"', created).encode()).decode()
        assert message["properties"]["body_encoding"] == "base64"
        hostile.append(json.dumps(message).encode())
    for item in hostile:
        r.delete(contract.QUEUE)
        r.rpush(contract.QUEUE, item)
        assert value(scrape(r), "limechat_queue_oldest_age_seconds") == 0
        assert stats_json(redis_url)["queue"]["oldest_age_seconds"] == 0
    # and hostile entries where stats reads events by account (a parked retry, a dead letter)
    r.hset(contract.RETRY_EVENTS, "odd", b"[" * 100_000)
    r.hset(contract.DLQ_ENTRIES, "odd", b"[" * 100_000)
    assert stats_json(redis_url)["retries"]["parked"] >= 0


def record_many(redis_url: str, names: list[str], outcome: str = "delivered") -> None:
    """What a worker's pipeline writes for each of ``names``, 50 to a round trip."""
    client = redis.Redis.from_url(redis_url)
    try:
        for start in range(0, len(names), 50):
            pipe = client.pipeline(transaction=False)
            for name in names[start : start + 50]:
                metering.record(pipe, outcome, name, 200, created_at=time.time())
            pipe.execute()
    finally:
        client.close()


def test_event_labels_are_capped_across_concurrent_workers(redis_url: str, r: redis.Redis) -> None:
    # Given 1000 distinct event names, recorded by four writers at once (as four workers)
    names = [f"event_{i:04d}" for i in range(1000)]
    writers = [
        threading.Thread(target=record_many, args=(redis_url, names[i::4])) for i in range(4)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    # Then exactly the cap keep their own label, the rest are counted under "other"
    cap = contract.METRICS_EVENT_LABELS_MAX
    assert r.scard(contract.METRICS_EVENT_NAMES) == cap
    samples = scrape(r)
    labels = label_values(samples, "limechat_events_delivered_total", "event")
    assert len(labels) == cap + 1 and "other" in labels
    assert value(samples, "limechat_events_delivered_total", event="other", status="200") == (
        1000 - cap
    )
    assert summed(samples, "limechat_events_delivered_total") == 1000
    assert value(samples, "limechat_delivery_latency_seconds_count") == 1000

    # When an admitted name and a new one come again, the admitted one keeps its label
    admitted = sorted(labels - {"other"})[0]
    record_many(redis_url, [admitted, "event_new"], outcome="retried")
    samples = scrape(r)
    assert value(samples, "limechat_events_retried_total", event=admitted, status="200") == 1
    assert value(samples, "limechat_events_retried_total", event="other", status="200") == 1
    assert r.scard(contract.METRICS_EVENT_NAMES) == cap


def test_label_values_survive_quotes_backslashes_and_separators(
    redis_url: str, r: redis.Redis
) -> None:
    odd = ['say"hi"', "back\\slash", "a|b|c", "<script>alert(1)</script>", "नमस्ते"]
    record_many(redis_url, odd)
    samples = scrape(r)
    assert label_values(samples, "limechat_events_delivered_total", "event") == set(odd)


def test_per_minute_series_places_each_outcome_in_its_minute(
    redis_url: str, r: redis.Redis
) -> None:
    # Given outcomes recorded 5 minutes ago, now, and 2 hours ago (outside the hour)
    now = r.time()[0]
    pipe = r.pipeline(transaction=False)
    metering.record(pipe, "delivered", "a", 200, now=now - 300)
    metering.record(pipe, "delivered", "a", 200, now=now)
    metering.record(pipe, "retried", "a", 503, now=now)
    metering.record(pipe, "dead_lettered", "a", None, now=now - 7200)
    pipe.execute()
    # Then the last hour shows the first three, each in its own minute, oldest first
    series = metering.per_minute(r, now=now)
    assert [m["minute"] for m in series] == [(now // 60 - 59 + i) * 60 for i in range(60)]
    assert series[-1] == {
        "minute": now // 60 * 60,
        "delivered": 1,
        "retried": 1,
        "dead_lettered": 0,
    }
    assert series[-6]["delivered"] == 1
    assert sum(m["dead_lettered"] for m in series) == 0
    # and every minute's hash expires (kept about two hours)
    ttl = r.ttl(contract.minute_key(now // 60))
    assert 0 < ttl <= contract.METRICS_MINUTE_TTL_SECONDS
    with pytest.raises(ValueError, match="minutes must be at least 1"):
        metering.per_minute(r, minutes=0)
