"""``python manage.py limechat_outbox_relay``: move committed outbox rows onto the queue."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ....api import default_producer
from ....errors import EnqueueError, LimechatEventsError
from ...relay import Relay, RelaySettings, describe_failure

_LEVELS = {0: logging.WARNING, 1: logging.INFO}


class Command(BaseCommand):
    help = (
        "Relay the limechat_outbox table to the queue (REDIS_URL) until SIGTERM or SIGINT, "
        "which let the batch in progress finish. Safe to run as several processes on "
        "PostgreSQL (SKIP LOCKED); on SQLite they work one at a time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = RelaySettings()
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
        parser.add_argument(
            "--idle-seconds",
            type=float,
            default=defaults.idle_seconds,
            help="how long to wait when the outbox is empty",
        )
        parser.add_argument(
            "--max-backoff",
            type=float,
            default=defaults.max_backoff_seconds,
            help="the longest wait between retries while Redis or the database is down",
        )
        parser.add_argument("--database", default="default", help="the database alias")
        parser.add_argument(
            "--once",
            action="store_true",
            help="relay what the outbox holds, then exit (1 if Redis or the database failed)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        _log_to_stderr(options["verbosity"])
        settings = RelaySettings(
            batch_size=options["batch_size"],
            idle_seconds=max(0.0, options["idle_seconds"]),
            max_backoff_seconds=max(0.1, options["max_backoff"]),
            using=options["database"],
        )
        try:
            producer = default_producer()
        except LimechatEventsError as exc:  # a malformed REDIS_URL, named without its secrets
            raise CommandError(str(exc)) from None
        relay = Relay(producer, settings, _stop_on_signals())
        log = logging.getLogger("producer.django.relay")
        log.info(
            "outbox relay started database=%s batch_size=%d", settings.using, settings.batch_size
        )
        try:
            relay.run(once=options["once"])
        except (EnqueueError, DatabaseError) as exc:  # only with --once
            raise CommandError(describe_failure(exc, settings.using)) from None
        log.info("outbox relay stopped rows=%d", relay.relayed)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the relay finishes its step and returns."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _log_to_stderr(verbosity: int) -> None:
    """Show the relay's log unless the project's LOGGING already routes it somewhere."""
    logger = logging.getLogger("producer.django")
    if logger.hasHandlers():  # its own, an ancestor's or the root's
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(verbosity, logging.DEBUG))
