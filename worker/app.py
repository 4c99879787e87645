"""The Celery app: broker settings for crash safety, the ``deliver`` task, the scheduler thread."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis
from celery import Celery, signals
from celery.apps import worker as celery_worker_module
from celery.exceptions import Reject
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from producer import contract

from . import markers, reload
from .accounts import Accounts
from .deadletter import DeadLetters
from .delivery import Deliverer
from .fullredis import waiting_while_full
from .limechat import LimechatClient
from .logs import configure as configure_logging
from .remote import PayloadHiddenRequest, nodename, refuse_unsafe_commands
from .reporting import init_sentry, report_dead_letter
from .schedule import Promoter, RetrySchedule
from .server import eviction_warning, require_supported
from .settings import Settings
from .stats import heartbeat, worker_name
from .stopflag import StopFlag
from .transport import use_plain_json

log = logging.getLogger("limechat_events.worker")


def state_client(
    url: str, *, patient: bool = True, stop_waiting: StopFlag | None = None
) -> redis.Redis:
    """A Redis client for our own keys (schedule, DLQ, markers, counters, limiter).

    The worker's is ``patient``: it rides out a Redis restart (about 30 s of retries with
    backoff) so that an outcome is recorded and its message acknowledged once Redis is back,
    instead of failing the task while the broker connection is down too; and it waits while
    Redis is full (worker/fullredis.py) until ``stop_waiting`` is set. The CLI's gives up
    after a second try.
    """
    if not patient:
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.1), 1)
        return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=15, retry=retry)
    client = waiting_while_full(redis.Redis).from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=15,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 20),
    )
    client.stop_waiting = stop_waiting
    return cast(redis.Redis, client)


def check_server(url: str) -> None:
    """Refuse a Redis the worker cannot use (``RedisTooOld``); warn if it may evict our keys.

    A Redis that does not answer yet is not an error here: the worker waits for it (and its
    transport checks the version once connected).
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        facts = require_supported(client)
    except redis.RedisError as exc:
        log.warning("cannot check the Redis server yet (%s: %s)", type(exc).__name__, exc)
        return
    finally:
        client.close()
    warning = eviction_warning(facts)
    if warning:
        log.warning("%s", warning)


def broker_url(url: str) -> str:
    """``REDIS_URL`` as kombu must read it, pointing at the same server and database.

    redis-py honours ``?password=``, ``?db=`` and any of its connection options in the query
    string; kombu's URL parser dies on the first (``TypeError`` at start) and on options it
    does not know, and takes the database from the path only. So: the password goes into the
    netloc, the database into the path, only ``ssl_*`` options stay (the broker's timeouts
    are ours, :func:`broker_options`). A ``unix://`` socket is ``redis+socket://`` to kombu.
    """
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    named = dict(pairs)
    password = named.get("password", parts.password and unquote(parts.password))
    userinfo = quote(parts.username or "", safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    auth = f"{userinfo}@" if userinfo else ""
    host = parts.netloc.rsplit("@", 1)[-1]
    db = named.get("db")
    if parts.scheme == "unix":
        query = urlencode({"virtual_host": db} if db else {})
        return f"redis+socket://{auth}{parts.path}" + (f"?{query}" if query else "")
    path = f"/{db}" if db else parts.path
    kept = urlencode([(key, value) for key, value in pairs if key.startswith("ssl_")])
    return f"{parts.scheme}://{auth}{host}{path}" + (f"?{kept}" if kept else "")


def broker_ssl(url: str) -> dict[str, Any] | None:
    """TLS options for a ``rediss://`` broker, verifying the server like redis-py does.

    kombu alone would fall back to not verifying certificates at all; query parameters
    (``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``) are honoured.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    reqs = query.get("ssl_cert_reqs", "required").lower()
    options: dict[str, Any] = {
        "ssl_cert_reqs": {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
            reqs, ssl.CERT_REQUIRED
        )
    }
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if key in query:
            options[key] = query[key]
    return options


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
        # One list per queue, no priority sub-lists: a message is then taken with BLMOVE into
        # the worker's taking list, never lost between taking and recording it (transport.py).
        "priority_steps": [0],
        # Single-event messages waiting behind the one taken travel with it, up to a batch
        # (worker/coalesce.py).
        "coalesce_events": settings.batch_size,
        # Do not wait forever on a Redis that vanished without closing the socket.
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }


def build_deliverer(
    settings: Settings,
    client: redis.Redis,
    on_dead_letter: Callable[[dict[str, Any]], None] | None = None,
) -> Deliverer:
    """The delivery machinery of one worker process, wired from ``settings``."""
    return Deliverer(
        settings,
        client,
        LimechatClient(
            settings.api_url, settings.timeout_seconds, connections=settings.concurrency
        ),
        RetrySchedule(
            client, batch_size=settings.batch_size, claim_timeout=settings.visibility_timeout
        ),
        DeadLetters(client, batch_size=settings.batch_size),
        on_dead_letter=on_dead_letter,
    )


def describe_accounts(accounts: Accounts) -> str:
    """``brand-a (10/s (burst 5)), brand-b (off)``: ids and rates, never tokens."""
    return ", ".join(f"{a.id} ({a.rate or 'off'})" for a in accounts.by_id.values())


def take_over_cold_shutdown() -> None:
    """SIGQUIT, and a second Ctrl-C, stop this process at once (exit 1), as documented.

    Celery's cold shutdown cancels running tasks, which its thread pool cannot do: it logs
    ``NotImplementedError ... kill_job`` as an unrecoverable error and waits for every POST
    in flight after all. Not waiting is safe: what this worker holds is in Redis (its taking
    list, the unacked hash) and is delivered again after LIMECHAT_VISIBILITY_TIMEOUT, markers
    permitting. The first Ctrl-C stays Celery's warm shutdown.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # (signal handlers can only be set from the main thread)
    warm_ctrl_c = signal.getsignal(signal.SIGINT)

    def cold(signum: int, frame: Any) -> None:
        log.warning("cold shutdown: exiting now; held messages come back after the timeout")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    def first_ctrl_c(signum: int, frame: Any) -> None:
        if callable(warm_ctrl_c):
            warm_ctrl_c(signum, frame)
        signal.signal(signal.SIGINT, cold)  # (over the cold handler Celery just installed)

    signal.signal(signal.SIGINT, first_ctrl_c)
    signal.signal(signal.SIGQUIT, cold)


def create_app(settings: Settings, *, on_fatal: Callable[[], None] | None = None) -> Celery:
    """A Celery app delivering events with ``settings``; runs its scheduler while it works.

    Should the scheduler thread die, ``on_fatal`` is called and the worker stops (SIGTERM to
    itself): without it retries would stall, so the worker must exit non-zero and be replaced.
    """
    use_plain_json()
    # Celery sends worker_shutting_down from its signal handlers, under the signal's lock. A
    # second stop signal arriving meanwhile (a process group's SIGTERM and the supervisor's,
    # a Ctrl-C pressed twice) runs the handler again inside the first, in the same thread: with
    # a plain Lock the worker deadlocked there and never stopped. An RLock lets it re-enter.
    signals.worker_shutting_down.lock = threading.RLock()  # type: ignore[attr-defined]
    app = Celery("limechat_events", broker=broker_url(settings.redis_url), set_as_current=True)
    app.conf.update(
        # kombu's Redis transport, vetting every queue item (see worker/transport.py).
        broker_transport="worker.transport:Transport",
        broker_use_ssl=broker_ssl(settings.redis_url),
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
        # `celery inspect`, `celery status`, Flower (worker/remote.py; README, "Celery's tools").
        worker_enable_remote_control=settings.remote_control_on,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=broker_options(settings),
    )

    if settings.remote_control_on:
        refuse_unsafe_commands()

    @signals.celeryd_init.connect(weak=False, dispatch_uid="limechat-events-nodename")
    def name_this_process(instance: Any = None, **_: Any) -> None:
        # (before the worker's consumer and its pidbox take the name)
        if instance is not None:
            instance.hostname = nodename(instance.hostname)

    @signals.setup_logging.connect(weak=False)
    def setup_logging(**_: Any) -> None:
        # Connecting here keeps Celery from installing its own handlers beside ours.
        configure_logging(settings.log_level, settings.log_format)

    sentry_on = init_sentry(settings)
    stopping = StopFlag()
    client = state_client(settings.redis_url, stop_waiting=stopping)
    deliverer = build_deliverer(
        settings, client, on_dead_letter=report_dead_letter if sentry_on else None
    )
    deliverer.stopping = stopping
    schedule, dead_letters = deliverer.schedule, deliverer.dead_letters
    # SIGHUP re-reads the accounts file (worker/reload.py). Celery would restart the whole
    # worker on it (exec, when not on a terminal), dropping nothing but stopping delivery.
    celery_worker_module.install_worker_restart_handler = lambda *a, **k: None  # type: ignore[attr-defined]
    reload.install(settings, deliverer)

    @app.task(
        name=contract.TASK_DELIVER,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        Request=PayloadHiddenRequest,
    )
    def deliver(task: Any, *args: Any, **kwargs: Any) -> None:
        redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
        try:
            deliverer.deliver_message(args, kwargs, redelivered=redelivered)
        except redis.RedisError as exc:
            # Outcomes could not be recorded: hand the message back, to be delivered again
            # (already delivered events are skipped by their marker).
            log.warning("Redis failed mid-delivery (%s); returning the message", exc)
            raise Reject(str(exc), requeue=True) from exc
        except Exception as exc:
            # deliver_message contains each event's failure, so this is a bug of ours. Celery
            # would acknowledge a failed task, losing the events not handled yet: hand the
            # message back instead, and say so loudly.
            log.critical("bug while handling a message; returning it to the queue", exc_info=True)
            raise Reject(f"{type(exc).__name__}: {exc}", requeue=True) from exc

    name = worker_name()
    chores: list[tuple[float, Any]] = [
        (5.0, lambda: heartbeat(client, name)),
        (60.0, lambda: markers.keep_current(client, deliverer.marked_for)),
    ]
    if settings.dlq_max_entries or settings.dlq_max_age_seconds:
        chores.append(
            (
                60.0,
                lambda: dead_letters.trim(
                    settings.dlq_max_entries or None,
                    settings.dlq_max_age_seconds or None,
                    time.time(),
                ),
            )
        )

    def scheduler_died() -> None:
        log.critical("the scheduler stopped: stopping this worker so that it is replaced")
        if on_fatal is not None:
            on_fatal()
        os.kill(os.getpid(), signal.SIGTERM)

    promoter = Promoter(schedule, settings.scheduler_interval, chores, on_death=scheduler_died)

    @signals.worker_ready.connect(weak=False)
    def start_scheduler(**_: Any) -> None:
        promoter.start()
        log.info(
            "worker ready (%s): queue=%s api=%s accounts=%s concurrency=%d sentry=%s",
            name,
            contract.QUEUE,
            settings.api_url,
            describe_accounts(deliverer.accounts),
            settings.concurrency,
            "on" if sentry_on else "off",
        )

    @signals.worker_ready.connect(weak=False)
    def take_over_cold_stops(**_: Any) -> None:
        take_over_cold_shutdown()

    @signals.worker_shutting_down.connect(weak=False)
    def begin_shutdown(**_: Any) -> None:
        deliverer.stopping.set()

    @signals.worker_shutdown.connect(weak=False)
    def stop_scheduler(**_: Any) -> None:
        promoter.stop()

    return app
