"""``send_event_on_commit``: validated when called, enqueued only once the transaction commits."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from ..api import Producer, build_event, check_idempotency_key, default_producer
from ..envelope import Event
from ..errors import LimechatEventsError

log = logging.getLogger(__name__)


def send_event_on_commit(
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
    idempotency_key: str | None = None,
    using: str | None = None,
) -> str:
    """``send_event``, deferred to the commit of the current transaction; returns the event id.

    The event is validated (and its id fixed) now, so a bad event raises
    :class:`~producer.ValidationError` in the request rather than in the commit hook. A
    rollback sends nothing. Outside a transaction (autocommit) it is ``send_event`` itself and
    raises :class:`~producer.EnqueueError` as that does.

    Inside one, an enqueue that fails after the commit (Redis down or slow) cannot fail the
    request any more (its data is committed): it is logged at ERROR with the event's id and
    name, and the event is lost. Use :func:`send_event_via_outbox` where that matters. With an
    ``idempotency_key`` already used, the returned id is this call's, not the first event's.
    """
    envelope = build_event(event, phone, distinct_id, data, account)
    key = check_idempotency_key(idempotency_key)
    producer = default_producer()  # here: a bad REDIS_URL fails the request, not the hook
    if not transaction.get_connection(using).in_atomic_block:
        return producer.enqueue_event(envelope, key)
    transaction.on_commit(functools.partial(_enqueue_committed, producer, envelope, key), using)
    return envelope["id"]


def _enqueue_committed(producer: Producer, envelope: Event, key: str | None) -> None:
    # Never raise: Django would skip the other on_commit callbacks of this transaction.
    try:
        producer.enqueue_event(envelope, key)
    except LimechatEventsError as exc:  # its message is scrubbed of passwords
        log.error(
            "not enqueued after commit, event lost evt=%s event=%s: %s",
            envelope["id"],
            envelope["event"],
            exc,
        )
