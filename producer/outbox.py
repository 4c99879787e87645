"""What the transactional outboxes (Django's and SQLAlchemy's) share, framework-free.

A web app writes an outbox row in the same database transaction as its business data; a relay
later moves committed rows onto the queue. Both halves meet here:

- :func:`outbox_envelope` validates the event when the row is written (a bad event fails the
  request, not the relay) and fixes its id, so the queue, the delivered markers and the DLQ
  see the event under the id the application got back;
- :func:`relay_envelopes` puts rows' envelopes on the queue in one Redis transaction. Their
  messages are marked redelivered: a relay killed after this step and before its database
  commit sends the same rows again, and the worker then reads the delivered markers, so an
  event LimeChat already has is skipped rather than sent twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import wire
from .api import Producer, build_event
from .envelope import Event
from .errors import ValidationError


def outbox_envelope(
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
) -> tuple[Event, str]:
    """A validated envelope and its JSON text (what the outbox row stores).

    Raises :class:`ValidationError` naming the first bad field, as ``send_event`` does.
    """
    envelope = build_event(event, phone, distinct_id, data, account)
    return envelope, json.dumps(envelope, ensure_ascii=False, allow_nan=False)


def envelope_from_row(text: str | bytes) -> Event:
    """The envelope an outbox row holds (its JSON text as :func:`outbox_envelope` wrote it)."""
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise ValidationError("payload", f"is not JSON: {exc}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("id"), str):
        raise ValidationError("payload", "is not an event envelope (a JSON object with an id)")
    return loaded  # type: ignore[return-value]


def relay_envelopes(producer: Producer, envelopes: Sequence[Event]) -> None:
    """Put ``envelopes`` on the queue, all or none, as redelivered batch messages in order.

    Raises :class:`EnqueueError` when Redis fails (nothing was enqueued: MULTI/EXEC).
    """
    if not envelopes:
        return
    messages = wire.encode_batches(envelopes, producer.settings.batch_size, redelivered=True)
    producer.enqueue_messages(messages)
