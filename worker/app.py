"""The Celery app: broker settings for crash safety, the ``deliver`` task, the scheduler thread."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery, signals
from celery.exceptions import Reject
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from producer import contract

from .deadletter import DeadLetters
from .delivery import Deliverer
from .limechat import LimechatClient
from .ratelimit import RateLimiter
from .schedule import Promoter, RetrySchedule
from .settings import Settings

log = logging.getLogger("limechat_events.worker")


def state_client(url: str) -> redis.Redis:
    """The worker's own Redis client (schedule, DLQ, markers), patient but not forever."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=15,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
    )


def broker_options(settings: Settings) -> dict[str, Any]:
    """kombu's Redis transport options, chosen for redelivery after a crash."""
    vt = settings.visibility_timeout
    return {
        # An event held by a worker that died is put back after this many seconds...
        "visibility_timeout": vt,
        # ...checked this often (kombu's default sweep is every 10 x 10 s, too slow for a
        # visibility timeout of a few seconds).
        "unacked_restore_interval": max(1, min(10, int(vt // 3))),
        "unacked_restore_throttle": 1,
        "unacked_key": contract.UNACKED,
        "unacked_index_key": contract.UNACKED_INDEX,
        "unacked_mutex_key": contract.UNACKED_MUTEX,
        "unacked_mutex_expire": max(5, int(vt)),
        # Do not wait forever on a Redis that vanished without closing the socket.
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }


def create_app(settings: Settings) -> Celery:
    """A Celery app delivering events with ``settings``; runs its scheduler while it works."""
    app = Celery("limechat_events", broker=settings.redis_url, set_as_current=True)
    app.conf.update(
        task_default_queue=contract.QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # One message per thread at a time: nothing sits prefetched while its clock runs.
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.concurrency,
        worker_pool="threads",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=broker_options(settings),
    )

    client = state_client(settings.redis_url)
    schedule = RetrySchedule(
        client, batch_size=settings.batch_size, claim_timeout=settings.visibility_timeout
    )
    rate = settings.rate
    deliverer = Deliverer(
        settings,
        client,
        LimechatClient(
            settings.api_url,
            settings.access_token,
            settings.account_id,
            settings.timeout_seconds,
        ),
        schedule,
        DeadLetters(client, batch_size=settings.batch_size),
        limiter=None if rate is None else RateLimiter(client, settings.account_id, rate),
    )

    @app.task(name=contract.TASK_DELIVER, acks_late=True, reject_on_worker_lost=True)
    def deliver(*args: Any, **kwargs: Any) -> None:
        try:
            deliverer.deliver_message(args, kwargs)
        except redis.RedisError as exc:
            # Outcomes could not be recorded: hand the message back, to be delivered again
            # (already delivered events are skipped by their marker).
            log.warning("Redis failed mid-delivery (%s); returning the message", exc)
            raise Reject(str(exc), requeue=True) from exc

    promoter = Promoter(schedule, settings.scheduler_interval)

    @signals.worker_ready.connect(weak=False)
    def start_scheduler(**_: Any) -> None:
        promoter.start()
        log.info(
            "worker ready: queue=%s api=%s account=%s concurrency=%d rate=%s",
            contract.QUEUE,
            settings.api_url,
            settings.account_id,
            settings.concurrency,
            rate or "off",
        )

    @signals.worker_shutting_down.connect(weak=False)
    def begin_shutdown(**_: Any) -> None:
        deliverer.stopping.set()

    @signals.worker_shutdown.connect(weak=False)
    def stop_scheduler(**_: Any) -> None:
        promoter.stop()

    return app
