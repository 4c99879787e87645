"""``send_event`` and ``send_events``: validate, stamp an id, put on the queue, never hang.

What the message holds and which Redis call carries it is decided here once
(:func:`prepare_event`, :func:`prepare_events`, :data:`ENQUEUE_ONCE`); ``producer.aio`` sends
the same on ``redis.asyncio``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection, parse_url
from redis.retry import Retry

from . import contract, validation, wire
from .config import ProducerSettings, check_redis_url, redacted_url, url_secrets
from .connections import MAX_CONNECTIONS, Connections
from .envelope import Event, new_event
from .errors import EnqueueError, ValidationError

# KEYS[1]: the idempotency key   KEYS[2]: the queue
# ARGV[1]: event id   ARGV[2]: TTL in seconds   ARGV[3]: the task message
# Returns the id of the event the key first produced; enqueues only if the key is new, in one
# atomic step, so a crash can never leave a remembered key without its event on the queue.
ENQUEUE_ONCE = """
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[3])
return ARGV[1]
"""

_BATCH_KEYS = frozenset({"distinct_id", "phone", "event", "data", "account"})


def bounded_options(parsed_url: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Connection options (from redis-py's ``parse_url``) that give up within ``timeout``.

    Connect and read each get half the budget, whatever the URL's query string says (redis-py
    lets ``?socket_timeout=`` override its arguments: a web request would hang that long). No
    command is sent twice (the caller adds a ``Retry`` of 0 retries, sync or asyncio): a
    retry after a timeout would enqueue the event a second time if the first try did land (a
    slow Redis runs it late).
    """
    options = {k: v for k, v in parsed_url.items() if k not in _POOL_ONLY}
    options.update(
        socket_connect_timeout=timeout / 2, socket_timeout=timeout / 2, retry_on_timeout=False
    )
    return {**options, **_NO_CLIENT_SETINFO}


# What a URL's query string may say for a pool: the producer's own pool has its own bounds.
_POOL_ONLY = frozenset({"max_connections", "timeout"})

# No CLIENT SETINFO when a connection opens: two round trips, each with its own timeout, that
# stretched a call on a slow network past its bound (and slowed every new connection). redis-py
# 8 says so with ``driver_info=None``; 6.4 with ``lib_name`` and ``lib_version`` None.
_NO_CLIENT_SETINFO: dict[str, None] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


class _Where:
    """Where Redis is, for error messages: the URL redacted, and its secrets to scrub.

    Kept in an object whose repr shows neither, so that no frame of an ``EnqueueError``'s
    traceback holds the password in a local (Sentry sends frame variables by default).
    """

    __slots__ = ("_secrets", "url")

    def __init__(self, url: str) -> None:
        self.url = redacted_url(url)
        self._secrets = url_secrets(url)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"<Redis at {self.url}>"


class Producer:
    """Sends events to the queue; thread-safe, one per process is enough."""

    def __init__(self, settings: ProducerSettings | None = None) -> None:
        self.settings = settings or ProducerSettings.from_env(os.environ)
        check_redis_url(self.settings.redis_url)
        timeout = self.settings.enqueue_timeout
        # A burst of more concurrent sends than connections waits its turn (a few hundred
        # microseconds each) instead of failing at once while Redis is fine.
        options = bounded_options(parse_url(self.settings.redis_url), timeout)  # type: ignore[no-untyped-call]
        self._redis = Connections(
            {**options, "retry": Retry(NoBackoff(), 0)},
            limit=MAX_CONNECTIONS,
            wait=timeout / 2,
        )
        self._where = _Where(self.settings.redis_url)

    def send_event(
        self,
        event: str,
        *,
        phone: str,
        distinct_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        account: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate one event and enqueue it; returns its id."""
        return self._enqueue(
            prepare_event(self.settings, event, phone, distinct_id, data, account, idempotency_key)
        )

    def enqueue_event(self, envelope: Event, key: str | None = None) -> str:
        """Enqueue an envelope :func:`build_event` made (and a checked idempotency key).

        For callers that validate now and enqueue later (``send_event_on_commit``): the id
        they returned at call time is the id the queue sees. Returns the id of the event on
        the queue (the first one's, when ``key`` was seen within its TTL).
        """
        return self._enqueue(prepare_envelope(self.settings, envelope, key))

    def _enqueue(self, prepared: PreparedEvent) -> str:
        with _enqueue_errors(self._where):
            return prepared.queued_id(self._redis.call(*prepared.command))

    def send_events(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate every item, then enqueue all of them or none; returns their ids in order.

        Items are shaped like LimeChat's request body (``distinct_id``, ``phone``, ``event``,
        ``data``; ``account`` optional). They travel as batch messages of up to
        ``LIMECHAT_BATCH_SIZE`` events, written in one Redis transaction.
        """
        ids, messages = prepare_events(items, self.settings.batch_size)
        if messages:
            self.enqueue_messages(messages)
        return ids

    def enqueue_messages(self, messages: list[str]) -> None:
        """LPUSH encoded task messages in one command (all or none), in order."""
        with _enqueue_errors(self._where):
            self._redis.call("LPUSH", contract.QUEUE, *messages)

    def ping(self) -> None:
        """Check that Redis answers (a readiness probe); :class:`EnqueueError` if it does not."""
        with _enqueue_errors(self._where):
            self._redis.call("PING")

    def close(self) -> None:
        self._redis.close()


@contextlib.contextmanager
def _enqueue_errors(where: _Where) -> Iterator[None]:
    """Turns any Redis failure into :class:`EnqueueError`, without leaking a password.

    ``from None``: the Redis error's own traceback (redis-py's frames, whose locals may hold
    the password) is not chained to it.
    """
    try:
        yield
    except redis.RedisError as exc:
        raise EnqueueError(
            f"could not enqueue to Redis at {where.url}: {type(exc).__name__}: "
            f"{where.scrub(str(exc))}"
        ) from None


class PreparedEvent(NamedTuple):
    """What one ``send_event`` writes, and the Redis command that does (the same sync and async).

    The command's reply is the id of the event on the queue: ``LPUSH``'s (the queue's length)
    is not, so :func:`queued_id` reads it.
    """

    event_id: str
    #: ``LPUSH`` of the message, or ``EVAL`` of :data:`ENQUEUE_ONCE` with the idempotency key.
    command: tuple[str | int, ...]

    def queued_id(self, reply: object) -> str:
        """The id of the event on the queue, from the command's reply."""
        return self.event_id if self.command[0] == "LPUSH" else id_text(reply)


def prepare_event(
    settings: ProducerSettings,
    event: object,
    phone: object,
    distinct_id: object,
    data: object,
    account: object,
    idempotency_key: object,
) -> PreparedEvent:
    """Validate one event and encode its message; :class:`ValidationError` if it is bad."""
    envelope = build_event(event, phone, distinct_id, data, account)
    return prepare_envelope(settings, envelope, check_idempotency_key(idempotency_key))


def prepare_envelope(settings: ProducerSettings, envelope: Event, key: str | None) -> PreparedEvent:
    """The message of an envelope :func:`build_event` made, with a checked idempotency key."""
    message = wire.encode_message([envelope])
    if key is None:
        return PreparedEvent(envelope["id"], ("LPUSH", contract.QUEUE, message))
    scope = envelope["account"] or settings.default_account
    once_key = contract.idempotency_key(scope, key)
    ttl = contract.IDEMPOTENCY_TTL_SECONDS
    return PreparedEvent(
        envelope["id"],
        ("EVAL", ENQUEUE_ONCE, 2, once_key, contract.QUEUE, envelope["id"], ttl, message),
    )


def prepare_events(items: object, batch_size: int) -> tuple[list[str], list[str]]:
    """Validate every item (all or none), then their ids and batch messages, in order."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise ValidationError(
            "items", f"must be a list of events (dicts), not {type(items).__name__}"
        )
    events = [_event_from_item(item, index) for index, item in enumerate(items)]
    if not events:
        return [], []
    return [e["id"] for e in events], wire.encode_batches(events, batch_size)


def id_text(reply: object) -> str:
    """The event id :data:`ENQUEUE_ONCE` returned (bytes unless the client decodes)."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def build_event(
    event: object,
    phone: object,
    distinct_id: object,
    data: object,
    account: object,
) -> Event:
    """A validated envelope, or :class:`ValidationError` naming the first bad field."""
    name = validation.check_event_name(event)
    e164 = validation.normalize_phone(phone)
    who = validation.check_distinct_id(distinct_id, e164)
    payload, _ = validation.check_data(data)
    acct = validation.check_optional_text("account", account, contract.ACCOUNT_MAX_LENGTH)
    return new_event(name, e164, who, payload, acct)


def check_idempotency_key(key: object) -> str | None:
    """``key`` if it is ``None`` or a usable idempotency key, else :class:`ValidationError`."""
    return validation.check_optional_text(
        "idempotency_key", key, contract.IDEMPOTENCY_KEY_MAX_LENGTH
    )


def _event_from_item(item: object, index: int) -> Event:
    if not isinstance(item, Mapping):
        raise ValidationError(
            "item", f"must be a JSON object (dict), not {type(item).__name__}", index=index
        )
    unknown = sorted(str(k) for k in item if k not in _BATCH_KEYS)
    if unknown:
        raise ValidationError(
            unknown[0],
            f"is not a field of an event (expected {', '.join(sorted(_BATCH_KEYS))})",
            index=index,
        )
    for required in ("event", "phone"):
        if required not in item:
            raise ValidationError(required, "is required", index=index)
    try:
        return build_event(
            item["event"],
            item["phone"],
            item.get("distinct_id"),
            item.get("data"),
            item.get("account"),
        )
    except ValidationError as exc:
        raise ValidationError(exc.field, exc.reason, index=index) from None


_default: Producer | None = None
_default_lock = threading.Lock()


def configure(settings: ProducerSettings | None = None, **overrides: Any) -> Producer:
    """Replace the process-wide producer (settings from the environment, then ``overrides``)."""
    global _default
    base = settings or ProducerSettings.from_env(os.environ)
    producer = Producer(ProducerSettings(**{**base.__dict__, **overrides}))
    with _default_lock:
        old, _default = _default, producer
    if old is not None:
        old.close()
    return producer


def default_producer() -> Producer:
    """The process-wide producer, created from the environment on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Producer()
    return _default


def send_event(
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Validate and enqueue one event; returns its id. See :meth:`Producer.send_event`.

    Raises :class:`ValidationError` (nothing enqueued) or :class:`EnqueueError` (Redis did not
    answer within about ``2 * LIMECHAT_ENQUEUE_TIMEOUT_SECONDS``).
    """
    return default_producer().send_event(
        event,
        phone=phone,
        distinct_id=distinct_id,
        data=data,
        account=account,
        idempotency_key=idempotency_key,
    )


def send_events(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """Validate all items, then enqueue all or none. See :meth:`Producer.send_events`."""
    return default_producer().send_events(items)


def ping() -> None:
    """Raise :class:`EnqueueError` if Redis does not answer in time: a web app's readiness probe."""
    default_producer().ping()
