"""The exporter's pure parts, and the shipped alert rules and Grafana dashboard against it:
every metric those name is one the exporter emits (no Redis needed)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT
from worker import metering, metrics
from worker.queueage import waiting_since

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "limechat-events.json"
METRIC_NAME = re.compile(r"\blimechat_[a-z_]+\b")


def reading() -> metrics.Reading:
    """A reading with something in every series, as stats.snapshot and metering shape it."""
    stats: dict[str, Any] = {
        "queue": {"waiting": 3, "in_flight": 1},
        "retries": {"parked": 2, "next_due_in_seconds": 1.5},
        "dlq": {"depth": 4, "by_reason": {"auth": 1, "http_4xx": 3}},
        "counters": {"delivered": 5, "retried": 2, "dead_lettered": 4, "dlq_trimmed": 1},
        "rate_limit": {"account": "acct", "paused_for_seconds": 12.5},
        "workers_alive": 2,
    }
    return metrics.Reading(
        stats=stats,
        oldest_age_seconds=42.0,
        counters={
            ("delivered", "200", "order_placed"): 5,
            ("retried", "503", "order_placed"): 2,
            ("dead_lettered", "401", "other"): 4,
        },
        latency_buckets={"0.1": 2, "1.0": 2, "+Inf": 1},
        latency_count=5,
        latency_sum=123.5,
    )


def exposition(r: metrics.Reading) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics._Fixed(metrics.families(r)))
    return generate_latest(registry).decode()


def emitted_names() -> set[str]:
    names = set()
    for family in text_string_to_metric_families(exposition(reading())):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_the_histogram_is_cumulative_and_ends_at_its_count() -> None:
    [family] = [
        f
        for f in text_string_to_metric_families(exposition(reading()))
        if f.name == "limechat_delivery_latency_seconds"
    ]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["0.05"] == 0 and buckets["0.1"] == 2 and buckets["0.5"] == 2
    assert buckets["1.0"] == 4 and buckets["21600.0"] == 4 and buckets["+Inf"] == 5
    values = list(buckets.values())
    assert values == sorted(values)
    totals = {s.name: s.value for s in family.samples if not s.name.endswith("_bucket")}
    assert totals == {
        "limechat_delivery_latency_seconds_count": 5,
        "limechat_delivery_latency_seconds_sum": 123.5,
    }


def test_every_reason_has_a_series_and_the_pause_reads_one() -> None:
    text = exposition(reading())
    assert 'limechat_dlq_entries{reason="exhausted"} 0.0' in text
    assert 'limechat_dlq_entries{reason="auth"} 1.0' in text
    assert 'limechat_rate_limit_paused{account="acct"} 1.0' in text
    assert 'limechat_events_dead_lettered_total{event="other",status="401"} 4.0' in text


def test_no_account_means_no_pause_series() -> None:
    r = reading()
    r.stats["rate_limit"]["account"] = None
    assert "limechat_rate_limit_paused" not in exposition(r)


@pytest.mark.parametrize(
    ("seconds", "le"),
    [(0.0, "0.025"), (0.025, "0.025"), (0.0251, "0.05"), (1.0, "1.0"), (21600.0, "21600.0")],
)
def test_a_latency_falls_in_the_smallest_bucket_that_holds_it(seconds: float, le: str) -> None:
    assert metering.bucket_label(seconds) == le


def test_a_latency_past_the_last_bound_is_counted_in_inf() -> None:
    assert metering.bucket_label(21600.5) == "+Inf"


def test_counter_fields_keep_separators_in_the_event_label() -> None:
    assert metering.parse_counter_field("delivered|200|a|b") == ("delivered", "200", "a|b")
    assert metering.parse_counter_field("delivered|200") is None
    assert metering.parse_counter_field("sent|200|a") is None


def message(events: Any) -> bytes:
    body = base64.b64encode(json.dumps([[events], {}, {}]).encode()).decode()
    return json.dumps({"body": body, "properties": {"body_encoding": "base64"}}).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        json.dumps({"body": "%%%", "properties": {"body_encoding": "base64"}}).encode(),
        message("not a list"),
        message([{"created_at": "yesterday"}]),
        message([{"created_at": True}]),
        message([]),
    ],
)
def test_an_unreadable_message_has_no_waiting_time(raw: bytes) -> None:
    assert waiting_since(raw) is None


def test_a_message_waits_since_its_longest_waiting_event() -> None:
    events = [
        {"created_at": 100.0},
        {"created_at": 50.0, "history": [{"at": 80.0}]},  # (retried: waits since 80)
        {"created_at": 90},
    ]
    assert waiting_since(message(events)) == 80.0


def test_alert_rules_parse_and_name_only_emitted_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    [group] = rules["groups"]
    by_name = {rule["alert"]: rule for rule in group["rules"]}
    # the four the issue asks for, at least
    for wanted in (
        "LimechatNoWorkersAlive",
        "LimechatOldestEventWaiting",
        "LimechatDeadLettersGrowing",
        "LimechatAuthDeadLetters",
    ):
        assert wanted in by_name, wanted
    assert 'reason="auth"' in by_name["LimechatAuthDeadLetters"]["expr"]
    emitted = emitted_names()
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert rule["expr"].count("(") == rule["expr"].count(")"), name
        assert set(METRIC_NAME.findall(rule["expr"])) <= emitted, name


def targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in targets(v)]
    if isinstance(node, list):
        return [e for v in node for e in targets(v)]
    return []


def test_the_dashboard_parses_and_names_only_emitted_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = targets(dashboard["panels"])
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    emitted = emitted_names()
    assert used <= emitted, used - emitted
    # and it shows the outcomes, the latency histogram and the DLQ
    for name in (
        "limechat_events_delivered_total",
        "limechat_delivery_latency_seconds_bucket",
        "limechat_dlq_entries",
        "limechat_queue_oldest_age_seconds",
        "limechat_workers_alive",
    ):
        assert name in used, name
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
