"""Delivered markers: which events LimeChat already accepted, so a copy of one is not sent again.

A copy of a delivered event can come back to a worker in these ways, all marked redelivered
(the only messages whose events are looked up here):

- kombu's restore of an unacknowledged message, and our taking-list recovery, after the
  visibility timeout (a worker killed after the 2xx and before the acknowledgement);
- a message handed back at once (Redis failed mid-batch: ``Reject(requeue=True)``);
- the scheduler re-promoting a claim whose promoter died, after its claim timeout (the
  visibility timeout);
- the outbox relay sending its rows again after it was killed between the enqueue and its
  database commit, as soon as it runs again;
- a DLQ replay or import of an event one copy of which was delivered (operators, any time).

Each copy is looked up when a worker takes it, which may be after it waited in the queue
behind a backlog. So a marker must outlive the visibility timeout plus the longest wait in the
queue; :func:`window` keeps it :data:`~producer.contract.DELIVERED_MARKER_WINDOW_SECONDS`
(four hours), or four visibility timeouts if that is longer. A copy looked up later than that
is sent again: at least once still, a duplicate only where the old 24-hour marker would have
caught it (a DLQ replay of a delivered copy days later, a relay down for hours).

Markers live in one set per hour (``limechat:delivered_in:<hour>``), each id as its 16 raw
bytes, the set expiring one window after its hour ends. Marking an event is one SADD, as soon
as LimeChat accepted it; the set's EXPIREAT goes with the batch's counters (and a chore of
every worker sets it each minute, so that no set is left without one). A per-event key with
its own TTL cost a command and about 104 bytes per event for 24 hours; a set member costs
about 78 bytes, kept on average the window and half an hour: about 15 bytes per event
averaged over a day (docs/benchmarks.md, "Single events"). Looking up is one SMISMEMBER per
hour of the window, plus one MGET of the per-event keys earlier versions wrote (a rolling
upgrade keeps honouring them).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Sequence

import redis

from producer import contract


def window(visibility_timeout: float, retry_max_seconds: float = 0.0) -> float:
    """How long, in seconds, a delivered event stays marked: the window, or four visibility
    timeouts, or the longest a copy may wait in the retry schedule and then be held, if
    either is longer."""
    return max(
        float(contract.DELIVERED_MARKER_WINDOW_SECONDS),
        4.0 * visibility_timeout,
        retry_max_seconds + visibility_timeout,
    )


def member(event_id: str) -> bytes:
    """An event id as a marker set holds it: a canonical UUID's 16 bytes, else its text."""
    try:
        parsed = uuid.UUID(event_id)
    except (ValueError, TypeError, AttributeError):
        parsed = None
    if parsed is not None and str(parsed) == event_id:
        return parsed.bytes
    return b"=" + str(event_id).encode("utf-8", "surrogatepass")


def _bucket(now: float) -> int:
    return int(now // contract.DELIVERED_BUCKET_SECONDS)


def mark(client: redis.Redis | redis.client.Pipeline, event_ids: Sequence[str], now: float) -> int:
    """Mark ``event_ids`` delivered at ``now`` (one SADD); returns the bucket they went to.

    The bucket's expiry is set apart (:func:`keep`), once per batch or half second, not once
    per event: the worker marks each event as soon as LimeChat accepted it, so that a crash
    resends as little as it did when every message held one event.
    """
    bucket = _bucket(now)
    if event_ids:
        client.sadd(contract.delivered_bucket_key(bucket), *[member(i) for i in event_ids])
    return bucket


def keep(pipe: redis.client.Pipeline, buckets: Iterable[int], marked_for: float) -> None:
    """Queue the expiry of marker ``buckets``: ``marked_for`` seconds after each one ends."""
    for bucket in sorted(set(buckets)):
        ends = (bucket + 1) * contract.DELIVERED_BUCKET_SECONDS
        pipe.expireat(contract.delivered_bucket_key(bucket), int(ends + marked_for) + 1)


def keep_current(client: redis.Redis, marked_for: float, now: float | None = None) -> None:
    """Set the expiry of this hour's and the last hour's markers (a chore of every worker):
    a worker killed between marking and :func:`keep` leaves none without one for long."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    keep(pipe, (_bucket(now) - 1, _bucket(now)), marked_for)
    pipe.execute()


def delivered(
    client: redis.Redis, event_ids: Sequence[str], marked_for: float, now: float | None = None
) -> set[str]:
    """Which of ``event_ids`` are marked delivered (in one pipeline)."""
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return set()
    now = time.time() if now is None else now
    members = [member(i) for i in ids]
    buckets = _buckets(now, marked_for)
    pipe = client.pipeline(transaction=False)
    pipe.mget([contract.delivered_key(i) for i in ids])
    for bucket in buckets:
        pipe.smismember(contract.delivered_bucket_key(bucket), members)
    legacy, *found = pipe.execute()
    hits = {i for i, flag in zip(ids, legacy, strict=True) if flag is not None}
    for flags in found:
        hits.update(i for i, flag in zip(ids, flags, strict=True) if flag)
    return hits


def _buckets(now: float, marked_for: float) -> Iterable[int]:
    # (one bucket either side for workers whose clocks differ from this one's)
    return range(_bucket(now - marked_for) - 1, _bucket(now) + 2)


def is_delivered(client: redis.Redis, event_id: str, marked_for: float = 0.0) -> bool:
    """Whether ``event_id`` is marked (``marked_for`` 0: any marker still in Redis)."""
    span = marked_for or float(contract.DELIVERED_MARKER_WINDOW_SECONDS) * 10
    return event_id in delivered(client, [event_id], span)


def expires_in(client: redis.Redis, event_id: str) -> float | None:
    """Seconds until ``event_id``'s marker goes (None if it has none)."""
    wanted = member(event_id)
    now = time.time()
    span = float(contract.DELIVERED_MARKER_WINDOW_SECONDS) * 10
    for bucket in _buckets(now, span):
        key = contract.delivered_bucket_key(bucket)
        if client.smismember(key, [wanted])[0]:
            return float(client.ttl(key))
    return None


class MarkerWriter:
    """Writes the markers of every delivery thread of a process, soon after each delivery.

    A thread hands over an event id as soon as LimeChat accepted it (:meth:`add`) and goes on;
    one writer thread SADDs whatever ids have come in since its last write, so a marker waits
    for one round trip at most while several threads' markers share it (a command per event
    cost each thread a round trip and about a third of a millisecond of CPU). Before its
    message is acknowledged a batch waits for its own markers (:meth:`wait`).
    """

    def __init__(self, client: redis.Redis, marked_for: float) -> None:
        self._client = client
        self.marked_for = marked_for
        self._ready = threading.Condition()
        self._pending: list[str] = []
        self._queued = 0  # ids handed over so far
        self._written = 0  # ids marked so far (a prefix of those handed over)
        self._failure: redis.RedisError | None = None
        self._buckets: set[int] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, event_id: str) -> int:
        """Hand over one delivered event's id; returns the ticket :meth:`wait` takes."""
        with self._ready:
            if self._thread is None or not self._thread.is_alive():
                # (started in the process that delivers, after any fork; again if it died)
                self._thread = threading.Thread(
                    target=self._run, name="limechat-markers", daemon=True
                )
                self._thread.start()
            self._pending.append(event_id)
            self._queued += 1
            self._ready.notify_all()
            return self._queued

    def wait(self, ticket: int) -> set[int]:
        """Block until the ids up to ``ticket`` are marked; returns the buckets written since
        the last call (to :func:`keep`). Raises the writer's ``RedisError`` if it cannot."""
        with self._ready:
            while self._written < ticket:
                if self._failure is not None:
                    raise self._failure
                if self._thread is None or not self._thread.is_alive():
                    # (never wait forever on a writer that is gone: the message goes back)
                    raise redis.RedisError("the marker writer thread is not running")
                self._ready.wait(1.0)
            buckets, self._buckets = self._buckets, set()
            return buckets

    def close(self) -> None:
        """Stop the writer thread (ids not yet written stay unwritten: their waiters raise)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                ids, self._pending = self._pending, []
                upto = self._queued
            try:
                bucket = mark(self._client, ids, time.time())
            except redis.RedisError as exc:  # (the client rode out what it could: tell waiters)
                with self._ready:
                    self._pending[:0] = ids
                    self._failure = exc
                    self._ready.notify_all()
                time.sleep(0.5)
                continue
            except Exception as exc:  # (a bug of ours: waiters hand their message back)
                with self._ready:
                    self._pending[:0] = ids
                    self._failure = redis.RedisError(f"marker writer: {exc!r}")
                    self._ready.notify_all()
                time.sleep(0.5)
                continue
            with self._ready:
                self._written = upto
                self._failure = None
                self._buckets.add(bucket)
                self._ready.notify_all()
