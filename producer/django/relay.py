"""The outbox relay: committed ``limechat_outbox`` rows onto the queue, then off the table.

One step is one database transaction: lock the oldest rows (``FOR UPDATE SKIP LOCKED`` where
the database has it, so several relays share the table without taking the same rows), put
their envelopes on the queue in one Redis transaction, delete them, commit. A relay killed
between the enqueue and the commit leaves the rows, and the next step sends them again: they
travel marked redelivered, so the worker skips, by their delivered markers, those LimeChat has
already accepted.

SQLite has no row locks: a step there first takes the database's write lock, so several
relays never send the same rows; they work one at a time (a relay waiting for the lock may wait
while another drains the table), so on SQLite run one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from django.db import DatabaseError, transaction

from ..api import Producer
from ..errors import EnqueueError, ValidationError
from ..outbox import envelope_from_row, relay_envelopes
from .outbox import TABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelaySettings:
    #: rows per step (one database transaction, one Redis transaction)
    batch_size: int = 500
    #: the pause when the outbox is empty
    idle_seconds: float = 0.5
    #: the longest pause after a failure (Redis or the database unreachable)
    max_backoff_seconds: float = 30.0
    #: the database alias
    using: str = "default"


def backoff_delay(failures: int, cap: float, rand: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: full jitter, 0.1 s doubling to ``cap``.

    ``rand`` is in [0, 1): several relays that lost Redis together do not return together.
    """
    return min(cap, 0.1 * 2.0 ** min(failures - 1, 30)) * (0.5 + rand / 2)


class Relay:
    """Moves outbox rows to the queue until ``stop`` is set; a step in progress completes."""

    def __init__(
        self, producer: Producer, settings: RelaySettings, stop: threading.Event | None = None
    ) -> None:
        self.producer = producer
        self.settings = settings
        self.stop = stop or threading.Event()
        self.relayed = 0
        #: rows whose payload is not an envelope: left in the table, reported once, skipped
        self._unreadable: set[int] = set()

    def step(self) -> int:
        """Relay one batch in one transaction; returns how many rows it moved."""
        from .models import OutboxEvent

        using = self.settings.using
        with transaction.atomic(using=using):
            connection = transaction.get_connection(using)
            skip_locked = connection.features.has_select_for_update_skip_locked
            if connection.vendor == "sqlite":
                _take_sqlite_write_lock(connection)
            rows = list(
                OutboxEvent.objects.using(using)
                .select_for_update(skip_locked=skip_locked)
                .exclude(id__in=self._unreadable)
                .order_by("id")
                .values_list("id", "payload")[: self.settings.batch_size]
            )
            ids, envelopes = [], []
            for row_id, payload in rows:
                try:
                    envelopes.append(envelope_from_row(payload))
                except ValidationError as exc:
                    self._unreadable.add(row_id)
                    log.error("outbox row %s left in the table, not relayed: %s", row_id, exc)
                    continue
                ids.append(row_id)
            relay_envelopes(self.producer, envelopes)  # EnqueueError: rolled back, rows kept
            OutboxEvent.objects.using(using).filter(id__in=ids).delete()
        return len(ids)

    def run(self, *, once: bool = False) -> int:
        """Relay until stopped (``once``: until the outbox is empty); returns the rows moved.

        Redis or the database unreachable: logged, then retried after a growing pause; the
        rows stay in the table. With ``once`` a failure ends the run (raised).
        """
        failures = 0
        while not self.stop.is_set():
            started = time.monotonic()
            unreadable = len(self._unreadable)
            try:
                moved = self.step()
            except (EnqueueError, DatabaseError) as exc:
                if once:
                    raise
                failures += 1
                self._report_failure(exc, failures)
                continue
            if failures:
                log.info("relay resumed after %d failed attempt(s)", failures)
                failures = 0
            self.relayed += moved
            if moved:
                ms = (time.monotonic() - started) * 1000
                log.debug("relayed rows=%d total=%d ms=%.1f", moved, self.relayed, ms)
            elif len(self._unreadable) > unreadable:
                continue  # (a batch of rows left in the table: the rows after them are next)
            elif once:
                break
            else:
                self.stop.wait(self.settings.idle_seconds)
        return self.relayed

    def _report_failure(self, exc: EnqueueError | DatabaseError, failures: int) -> None:
        delay = backoff_delay(failures, self.settings.max_backoff_seconds, random.random())
        if isinstance(exc, DatabaseError):
            # A broken connection is not reused: the next step opens a new one.
            transaction.get_connection(self.settings.using).close()
        what = describe_failure(exc, self.settings.using)
        log.warning("relay step failed, rows kept, retrying in %.1fs: %s", delay, what)
        self.stop.wait(delay)


def describe_failure(exc: EnqueueError | DatabaseError, using: str) -> str:
    """What went wrong, for a log line: no Redis password, no database password."""
    if isinstance(exc, EnqueueError):
        return str(exc)  # its text never carries the Redis password
    from django.db import connections

    text = str(exc).strip()
    password = connections[using].settings_dict.get("PASSWORD")
    if password:
        text = text.replace(str(password), "***")
    return f"database error: {type(exc).__name__}: {text}"


def _take_sqlite_write_lock(connection: object) -> None:
    # A write that changes nothing still takes SQLite's RESERVED lock for the transaction: the
    # next relay's step waits here (Django's "timeout" option) instead of reading our rows.
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute(f"DELETE FROM {TABLE} WHERE 0 = 1")
