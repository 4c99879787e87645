"""The outbox relay: committed ``limechat_outbox`` rows onto the queue, each step one
database transaction.

A step locks the oldest rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: relays running side by
side take different rows), enqueues them in one Redis transaction, deletes them and commits.
Killed between the enqueue and the commit, it leaves the rows in place and the next step sends
them again, marked redelivered (the worker's delivered markers skip what LimeChat already
has). Redis or the database failing rolls the step back: the rows stay, the relay waits and
tries again. SQLite has no row locks to skip: run one relay there (docs/outbox.md).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from ..api import Producer
from ..config import redacted_url, url_secrets
from ..errors import ConfigError, EnqueueError, ValidationError
from ..outbox import envelope_from_row, relay_envelopes
from .table import outbox_table

log = logging.getLogger("limechat_events.outbox")

DEFAULT_BATCH_SIZE = 500
DEFAULT_POLL_INTERVAL = 0.1
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


def engine_url(url: str) -> str:
    """``url`` with psycopg 3 as the driver when it names none (SQLAlchemy 2.0 would pick
    psycopg2, which the extra does not install)."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare) :]
    return url


def check_database_url(url: str) -> str:
    """``url`` if SQLAlchemy reads it as written, else :class:`ConfigError` (never showing it).

    SQLAlchemy ends the password at its first ``@``: an unencoded one in a password sends the
    rest of it to the host name, and from there into logs and the driver's errors.
    """
    netloc = urlsplit(url).netloc
    if netloc.count("@") > 1:
        raise ConfigError(
            "the database URL cannot be read as written: a password holding @ (or /, ?, #) "
            "must be percent-encoded (@ as %40, / as %2F, ? as %3F, # as %23)"
        )
    return url


def redacted_db_url(url: str) -> str:
    """The database URL for logs: the password as ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # (an unparseable URL: show none of it)
        return redacted_url(url)


@dataclass
class RelayStats:
    relayed: int = 0
    steps: int = 0
    failures: int = 0
    skipped_rows: set[int] = field(default_factory=set)


class OutboxRelay:
    """Moves rows from one database's outbox to one Redis queue; not thread-safe."""

    def __init__(
        self,
        engine: Engine,
        producer: Producer,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        secrets: list[str] | None = None,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.batch_size = batch_size
        self.stats = RelayStats()
        # Passwords to scrub from database errors (drivers may echo the DSN).
        self._secrets = secrets if secrets is not None else url_secrets(str(engine.url))

    def step(self) -> int:
        """Relay up to ``batch_size`` rows in one transaction; returns how many.

        Raises :class:`EnqueueError` (Redis) or ``SQLAlchemyError`` (the database): the
        transaction is rolled back and the rows stay for the next step.
        """
        table = outbox_table
        query = select(table.c.id, table.c.payload).order_by(table.c.id).limit(self.batch_size)
        if self.stats.skipped_rows:
            query = query.where(table.c.id.not_in(self.stats.skipped_rows))
        with self.engine.begin() as conn:
            rows = conn.execute(query.with_for_update(skip_locked=True)).all()
            ids, envelopes = [], []
            for row_id, payload in rows:
                try:
                    envelopes.append(envelope_from_row(payload))
                except ValidationError as exc:
                    self._skip(row_id, exc)
                    continue
                ids.append(row_id)
            if not ids:
                return 0
            relay_envelopes(self.producer, envelopes)
            conn.execute(delete(table).where(table.c.id.in_(ids)))
        self.stats.relayed += len(ids)
        self.stats.steps += 1
        log.debug("relayed rows=%d ids=%d..%d", len(ids), ids[0], ids[-1])
        return len(ids)

    def _skip(self, row_id: int, exc: ValidationError) -> None:
        # A row no writer of ours produced (edited by hand): kept for a human, never retried.
        self.stats.skipped_rows.add(row_id)
        log.error("outbox row %d is not an event, left in the table: %s", row_id, exc)

    def run(
        self,
        should_stop: Callable[[], bool],
        *,
        once: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_backoff: float = BACKOFF_MAX,
        sleep: Callable[[float], None] = time.sleep,
    ) -> RelayStats:
        """Relay until ``should_stop()`` (checked between steps: a step always finishes).

        ``once``: return as soon as a step finds fewer rows than a full batch (the table is
        drained). Failures back off exponentially up to ``max_backoff`` seconds (30) and never
        end the loop.
        """
        failures = 0
        while not should_stop():
            try:
                moved = self.step()
            except (EnqueueError, SQLAlchemyError) as exc:
                failures += 1
                self.stats.failures += 1
                delay = _backoff(failures, max_backoff)
                log.warning("relay step failed (retry in %.1fs): %s", delay, self.describe(exc))
                _nap(delay, should_stop, sleep)
                continue
            if failures:
                log.info("relay recovered after %d failed step(s)", failures)
                failures = 0
            if moved < self.batch_size:
                if once:
                    break
                _nap(poll_interval, should_stop, sleep)
        return self.stats

    def describe(self, exc: Exception) -> str:
        if isinstance(exc, EnqueueError):
            return str(exc)  # (already redacted)
        # SQLAlchemy's text carries the statement and a link after the driver's first line.
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _backoff(failures: int, most: float = BACKOFF_MAX) -> float:
    """Exponential from 0.5 s to ``most``, jittered by half: relays that failed together
    (Redis restarting) do not all come back in the same instant."""
    ceiling = min(most, BACKOFF_FIRST * 2.0 ** min(failures - 1, 16))
    return ceiling * (0.5 + random.random() / 2)


def _nap(seconds: float, should_stop: Callable[[], bool], sleep: Callable[[float], None]) -> None:
    """Sleep ``seconds`` in short naps, waking early when asked to stop."""
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        sleep(min(left, 0.05))
