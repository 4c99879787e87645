"""Thin adapters to what other modules compute: the Prometheus text and the per-minute series.

Both are imported when first asked for, so the console runs (saying what is missing) on an
installation without them.
"""

from __future__ import annotations

import importlib
from typing import Any

import redis
from flask import Response


def prometheus(client: redis.Redis, account: str | None) -> Response:
    """``worker.metrics.collect``'s text, or 503 when the metrics module is not there."""
    try:
        metrics: Any = importlib.import_module("worker.metrics")
    except ImportError:
        return Response("metrics not available\n", 503, mimetype="text/plain")
    body = metrics.collect(client, account)
    return Response(body, 200, {"Content-Type": metrics.CONTENT_TYPE})


def last_hour(client: redis.Redis) -> list[dict[str, Any]]:
    """Sixty ``{minute, delivered, retried, dead_lettered}``, oldest first; [] if no module
    keeps them (the chart then says "no data")."""
    try:
        timeline: Any = importlib.import_module("worker.timeline")
    except ImportError:
        pass
    else:
        return list(timeline.last_hour(client))
    try:  # (where the metrics branch keeps the same series)
        metering: Any = importlib.import_module("worker.metering")
    except ImportError:
        return []
    return list(metering.per_minute(client, 60))
