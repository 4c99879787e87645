"""Every name the producer, the worker and the CLI must agree on: queue, task, Redis keys, limits.

Everything lives under one prefix, so ``SCAN 0 MATCH limechat:*`` finds all of it (kombu adds
its own ``_kombu.binding.*`` bookkeeping keys when a worker declares the queue).
"""

from __future__ import annotations

from typing import NamedTuple

PREFIX = "limechat"

#: The Redis list the workers consume (a Celery queue on kombu's Redis transport).
QUEUE = f"{PREFIX}:events"

#: The one task: ``deliver(events)`` takes a list of event envelopes (a batch of one or more).
TASK_DELIVER = "limechat.deliver"

# --- limits the producer enforces (documented in the README) ---
EVENT_NAME_MAX_LENGTH = 128
DISTINCT_ID_MAX_LENGTH = 256
ACCOUNT_MAX_LENGTH = 128
IDEMPOTENCY_KEY_MAX_LENGTH = 256
PHONE_MAX_LENGTH = 32
DATA_MAX_BYTES = 64 * 1024
DATA_MAX_DEPTH = 32

#: How long an idempotency key is remembered.
IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60

#: Default number of events that travel in one batch message.
DEFAULT_BATCH_SIZE = 50

# --- Redis keys ---
#: sorted set: event id -> due time (epoch seconds) of parked retries
RETRY_DUE = f"{PREFIX}:retry:due"
#: sorted set: event id -> claim time, for entries a scheduler has taken but not yet published
RETRY_CLAIMED = f"{PREFIX}:retry:claimed"
#: hash: event id -> event envelope (JSON) of parked retries
RETRY_EVENTS = f"{PREFIX}:retry:events"
#: sorted set: event id -> time it was dead-lettered
DLQ_INDEX = f"{PREFIX}:dlq:index"
#: hash: event id -> dead-letter entry (JSON)
DLQ_ENTRIES = f"{PREFIX}:dlq:entries"
#: hash: event id -> reason, and reason -> number of entries (depth by reason in one read)
DLQ_REASONS = f"{PREFIX}:dlq:reasons"
DLQ_REASON_COUNTS = f"{PREFIX}:dlq:reason_counts"
#: hash of counters (delivered, retried, dead_lettered, per event name, per HTTP status)
STATS_COUNTERS = f"{PREFIX}:stats"
#: sorted set: worker name -> last time its scheduler looped (who is alive)
WORKERS = f"{PREFIX}:workers"
#: kombu's bookkeeping of messages a worker holds but has not acknowledged
UNACKED = f"{PREFIX}:unacked"
UNACKED_INDEX = f"{PREFIX}:unacked_index"
UNACKED_MUTEX = f"{PREFIX}:unacked_mutex"
#: sorted set: each consuming channel's taking list -> when its worker last said it was alive
TAKING = f"{PREFIX}:taking"


def taking_key(queue: str, channel: str) -> str:
    """The list a consuming channel moves each message into as it takes it off ``queue``."""
    return f"{queue}:taking:{channel}"


def taking_source(key: str) -> str:
    """The queue a taking list's messages came from (and go back to)."""
    return key.rsplit(":taking:", 1)[0]


def idempotency_key(account: str | None, key: str) -> str:
    """The Redis key remembering which event an idempotency key produced.

    The account's length comes first, so no (account, key) pair can be read as another one,
    whatever ``:`` either holds (``("a:b", "c")`` and ``("a", "b:c")`` differ).
    """
    scope = account or ""
    return f"{PREFIX}:idem:{len(scope)}:{scope}:{key}"


def delivered_bucket_key(bucket: int) -> str:
    """The set of ids of the events LimeChat accepted during marker bucket ``bucket``
    (epoch seconds // :data:`DELIVERED_BUCKET_SECONDS`); see worker/markers.py."""
    return f"{PREFIX}:delivered_in:{bucket}"


#: The delivered markers' time buckets: one set per this many seconds.
DELIVERED_BUCKET_SECONDS = 60 * 60
#: A delivered event is remembered at least this long (worker/markers.py says why; the worker
#: stretches it to four visibility timeouts when that is longer).
DELIVERED_MARKER_WINDOW_SECONDS = 4 * 60 * 60


def delivered_key(event_id: str) -> str:
    """The per-event marker key of earlier versions (read, never written now): a worker of this
    version still skips what a worker of the previous one delivered during a rolling upgrade."""
    return f"{PREFIX}:delivered:{event_id}"


#: How long earlier versions kept their per-event marker.
DELIVERED_MARKER_TTL_SECONDS = 24 * 60 * 60


class RateKeys(NamedTuple):
    reserve: str
    gate: str
    pause: str
    factor: str


def rate_keys(account: str) -> RateKeys:
    """The rate limiter's keys for one account (hash-tagged: one Redis Cluster slot each)."""
    base = f"{PREFIX}:rate:{{{account}}}"
    return RateKeys(f"{base}:reserve", f"{base}:gate", f"{base}:pause", f"{base}:factor")


# --- metrics (worker/metering.py records them, worker/metrics.py exports them) ---
#: set: the event names that keep their own label in the metrics (at most the cap below)
METRICS_EVENT_NAMES = f"{PREFIX}:metrics:event_names"
#: hash: "outcome|status|event label" -> count (the labelled Prometheus counters)
METRICS_COUNTERS = f"{PREFIX}:metrics:counters"
#: hash: delivery latency histogram: bucket "le" -> count (not cumulative), and "sum_ms"
METRICS_LATENCY = f"{PREFIX}:metrics:latency"
#: Event names beyond this many share the label ``event="other"`` (event names are user data).
METRICS_EVENT_LABELS_MAX = 100
#: How long a per-minute bucket is kept (the console charts the last hour).
METRICS_MINUTE_TTL_SECONDS = 2 * 60 * 60


def minute_key(minute: int) -> str:
    """The hash of outcome -> count for one minute (``minute`` is epoch seconds // 60)."""
    return f"{PREFIX}:metrics:minute:{minute}"
