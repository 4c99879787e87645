"""A module-level Celery app for Celery's own tools: ``celery -A worker.celery_app inspect ping``.

It reads only ``REDIS_URL`` (no LimeChat credentials: it delivers nothing), and importing it
starts no thread and opens no connection. It speaks to the workers through the same transport
and remote-control settings as ``limechat-events worker``, so ``inspect``, ``status``,
``control`` and Flower (``celery -A worker.celery_app flower``) reach every worker process.

It is not a worker: ``celery -A worker.celery_app worker`` is refused, because a worker without
the delivery machinery would take events off the queue and lose them (start workers with
``limechat-events worker``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery

from producer.config import redis_url

from .app import broker_ssl, broker_url

NOT_A_WORKER = (
    "celery -A worker.celery_app is for Celery's tools (inspect, status, control, flower); "
    "it cannot deliver events: start workers with `limechat-events worker`"
)


class ControlApp(Celery):
    """A Celery app that talks to the workers and refuses to be one."""

    @property
    def Worker(self) -> Any:  # (Celery's name)
        raise SystemExit(NOT_A_WORKER)


def create_control_app(environ: Mapping[str, str]) -> Celery:
    """The app Celery's tools load, for the Redis of ``environ``'s ``REDIS_URL``."""
    url = redis_url(environ)
    control = ControlApp("limechat_events", broker=broker_url(url), set_as_current=False)
    control.conf.update(
        broker_transport="worker.transport:Transport",
        broker_use_ssl=broker_ssl(url),
        # One list per queue, like the workers' (worker/app.py, broker_options).
        broker_transport_options={
            "priority_steps": [0],
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
        },
        accept_content=["json"],
        task_serializer="json",
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=1,
    )
    return control


app = create_control_app(os.environ)
