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

from . import contract, wire
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
    """The envelope an outbox row holds (its JSON text as :func:`outbox_envelope` wrote it).

    Raises :class:`ValidationError`, and nothing else, for a row that cannot travel: not JSON,
    ``NaN`` or ``Infinity``, nested past Python's limits, text that is not UTF-8 once written
    (a lone surrogate), or not an object with an id. A relay skips such a row (it was edited
    by hand) instead of failing the rows around it or dying on it.
    """
    try:
        loaded = json.loads(text, parse_constant=_no_constants)
        if _depth(loaded) > _MAX_DEPTH:  # (so that writing it, in a batch, cannot recurse out)
            raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
        # Written now as the relay will write it: what fails must fail here, for this row.
        json.dumps(loaded, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        # (UnicodeError and JSONDecodeError are ValueErrors)
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ValidationError("payload", f"is not JSON an event can be sent as: {why}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("id"), str):
        raise ValidationError("payload", "is not an event envelope (a JSON object with an id)")
    return loaded  # type: ignore[return-value]


#: An envelope nests its ``data`` (at most DATA_MAX_DEPTH deep) one level down.
_MAX_DEPTH = contract.DATA_MAX_DEPTH + 2


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: object) -> int:
    """How deeply ``value`` nests lists and objects (iterative: no recursion to run out of)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= _MAX_DEPTH:
                stack.extend((child, level + 1) for child in item)
    return deepest


def relay_envelopes(producer: Producer, envelopes: Sequence[Event]) -> None:
    """Put ``envelopes`` on the queue, all or none, as redelivered batch messages in order.

    Raises :class:`EnqueueError` when Redis fails (one LPUSH: all were enqueued or none, though
    after a timeout the caller cannot know which; the relay then sends the rows again).
    """
    if not envelopes:
        return
    messages = wire.encode_batches(envelopes, producer.settings.batch_size, redelivered=True)
    producer.enqueue_messages(messages)
