"""The console's adapters to the Prometheus text and the per-minute series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from flask import Response

from .. import metering, metrics


def prometheus(client: redis.Redis, account: str | Sequence[str] | None) -> Response:
    """What ``/metrics`` answers: :func:`worker.metrics.collect`'s text."""
    return Response(metrics.collect(client, account), 200, {"Content-Type": metrics.CONTENT_TYPE})


def last_hour(client: redis.Redis) -> list[dict[str, Any]]:
    """Sixty ``{minute, delivered, retried, dead_lettered}``, oldest first."""
    return metering.per_minute(client, 60)
