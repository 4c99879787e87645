"""Prometheus metrics of the whole cluster, read from Redis: one scrape sees every worker.

The console serves :func:`collect`'s bytes at ``/metrics`` with :data:`CONTENT_TYPE`. Each call
builds its own ``CollectorRegistry`` (nothing is added to prometheus_client's global one, and no
process-local state is kept: any number of consoles can serve it). Raises ``redis.RedisError``
when Redis does not answer, which a scrape should report as a failure (``up`` 0), not as zeros.

The queue, DLQ, worker and rate-limit gauges are ``limechat-events stats``' own snapshot; the
labelled counters, the latency histogram and the per-minute counts are worker/metering.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from producer import contract

from . import metering
from .outcome import Reason
from .queueage import oldest_waiting_age
from .stats import rate_state, redis_now, snapshot

#: The ``Content-Type`` of :func:`collect`'s bytes (the text format this prometheus_client
#: version writes).
CONTENT_TYPE = CONTENT_TYPE_LATEST

_COUNTER_HELP = {
    "delivered": "Events LimeChat accepted (2xx), by event name and HTTP status.",
    "retried": "Failed attempts parked for a retry, by event name and HTTP status ('none': no "
    "answer).",
    "dead_lettered": "Events put in the DLQ, by event name and HTTP status ('none': no answer "
    "or not sent).",
}


@dataclass
class Reading:
    """Everything one scrape shows, read from Redis (see :func:`read`)."""

    stats: dict[str, Any]
    oldest_age_seconds: float
    #: each account's rate-limit state (stats.rate_state), for the pause gauges
    rates: list[dict[str, Any]] = field(default_factory=list)
    #: (outcome, status, event label) -> count
    counters: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: histogram bucket ``le`` -> count in that bucket alone (not cumulative)
    latency_buckets: dict[str, int] = field(default_factory=dict)
    latency_count: int = 0
    latency_sum: float = 0.0


def read(client: redis.Redis, account: str | Sequence[str] | None) -> Reading:
    """The cluster's numbers; ``account`` (LIMECHAT_ACCOUNT_ID, or every account of
    LIMECHAT_ACCOUNTS_FILE) is whose rate-limit pause is shown (None: no pause gauge)."""
    accounts = [account] if isinstance(account, str) else list(account or [])
    stats = snapshot(client, accounts[0] if accounts else None, None)
    oldest = oldest_waiting_age(client, redis_now(client))
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(contract.METRICS_COUNTERS)
    pipe.hgetall(contract.METRICS_LATENCY)
    raw_counters, raw_latency = pipe.execute()
    counters: dict[tuple[str, str, str], int] = {}
    for key, value in raw_counters.items():
        parts = metering.parse_counter_field(key.decode("utf-8", "replace"))
        if parts is not None:
            counters[parts] = int(value)
    latency = {k.decode(): int(v) for k, v in raw_latency.items()}
    buckets = {le: latency[le] for le in _bucket_labels() if le in latency}
    return Reading(
        stats=stats,
        oldest_age_seconds=oldest,
        rates=[rate_state(client, a, None) for a in accounts],
        counters=counters,
        latency_buckets=buckets,
        # (each delivery adds to exactly one bucket: their sum is the count)
        latency_count=sum(buckets.values()),
        latency_sum=latency.get(metering.SUM_FIELD, 0) / 1000,
    )


def families(reading: Reading) -> list[Metric]:
    """The metric families of one reading (no Redis needed: unit-testable)."""
    stats = reading.stats
    out: list[Metric] = [
        _gauge(
            "limechat_queue_waiting", "Messages waiting in the queue.", stats["queue"]["waiting"]
        ),
        _gauge(
            "limechat_queue_in_flight",
            "Messages a worker holds and has not acknowledged.",
            stats["queue"]["in_flight"],
        ),
        _gauge(
            "limechat_queue_oldest_age_seconds",
            "How long the next message's longest-waiting event has waited (since enqueue or "
            "its last attempt); 0 when the queue is empty.",
            round(reading.oldest_age_seconds, 3),
        ),
        _gauge(
            "limechat_retries_parked",
            "Events parked for a later attempt (retries, and rate-limit waits).",
            stats["retries"]["parked"],
        ),
        _gauge(
            "limechat_workers_alive",
            "Workers whose scheduler reported in the last 15 seconds.",
            stats["workers_alive"],
        ),
    ]
    dlq = GaugeMetricFamily(
        "limechat_dlq_entries", "Dead letters in the DLQ, by reason.", labels=["reason"]
    )
    by_reason = {reason.value: 0 for reason in Reason}  # (every reason, so no series vanishes)
    by_reason.update(stats["dlq"]["by_reason"])
    for reason, count in sorted(by_reason.items()):
        dlq.add_metric([reason], count)
    out.append(dlq)
    rates = reading.rates or ([stats["rate_limit"]] if stats["rate_limit"]["account"] else [])
    if rates:
        paused = GaugeMetricFamily(
            "limechat_rate_limit_paused",
            "1 while LimeChat's 429 has paused every delivery for the account, else 0.",
            labels=["account"],
        )
        remaining = GaugeMetricFamily(
            "limechat_rate_limit_pause_remaining_seconds",
            "Seconds left of the account's 429 pause (0 when not paused).",
            labels=["account"],
        )
        for rate in rates:
            paused.add_metric([rate["account"]], 1 if rate["paused_for_seconds"] > 0 else 0)
            remaining.add_metric([rate["account"]], rate["paused_for_seconds"])
        out += [paused, remaining]
    out += _counters(reading.counters)
    trimmed = CounterMetricFamily(
        "limechat_dlq_trimmed",
        "Dead letters dropped by LIMECHAT_DLQ_MAX_ENTRIES / LIMECHAT_DLQ_MAX_AGE_SECONDS.",
    )
    trimmed.add_metric([], stats["counters"].get("dlq_trimmed", 0))
    out.append(trimmed)
    out.append(_latency(reading))
    return out


def collect(client: redis.Redis, account: str | Sequence[str] | None) -> bytes:
    """The Prometheus text exposition of the cluster (serve it with :data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families(read(client, account))))
    return generate_latest(registry)


class _Fixed(Collector):
    """Hands the registry the families already read (one Redis read per scrape)."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counters(counts: dict[tuple[str, str, str], int]) -> list[Metric]:
    out: list[Metric] = []
    for outcome in metering.OUTCOMES:
        family = CounterMetricFamily(
            f"limechat_events_{outcome}", _COUNTER_HELP[outcome], labels=["event", "status"]
        )
        for (kind, status, label), count in sorted(counts.items()):
            if kind == outcome:
                family.add_metric([label, status], count)
        out.append(family)
    return out


def _latency(reading: Reading) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for le in _bucket_labels():
        cumulative += reading.latency_buckets.get(le, 0)
        buckets.append((le, cumulative))
    # (+Inf is the count itself, so the histogram stays consistent whatever was read)
    buckets[-1] = ("+Inf", reading.latency_count)
    return HistogramMetricFamily(
        "limechat_delivery_latency_seconds",
        "Seconds from enqueue (the event's created_at) to LimeChat's 2xx, retries included.",
        buckets=buckets,
        sum_value=reading.latency_sum,
    )


def _bucket_labels() -> list[str]:
    return [metering.bucket_label(bound) for bound in metering.LATENCY_BUCKETS] + ["+Inf"]
