"""``send_event_via_outbox``: the event as a row, in the caller's transaction."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Insert, insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

from ..envelope import Event
from ..outbox import outbox_envelope
from .table import outbox_table

_INSERT = insert(outbox_table)


def send_event_via_outbox(
    session: Session | scoped_session[Any] | Connection,
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
) -> str:
    """Write the event into ``limechat_outbox`` in ``session``'s transaction; returns its id.

    Validates first (:class:`~producer.ValidationError` names the bad field, and nothing is
    written). The row commits or rolls back with the business data; the relay
    (``limechat-events outbox-relay``) enqueues it once it is committed, under this id. The
    INSERT runs now (not at flush): an error in it surfaces here, in the request.
    """
    envelope, text = outbox_envelope(
        event, phone=phone, distinct_id=distinct_id, data=data, account=account
    )
    statement, row = outbox_insert(envelope, text)
    result = session.execute(statement, row)
    if inspect.isawaitable(result):  # an AsyncSession's: unawaited, it would write nothing
        result.close()
        raise TypeError(
            "send_event_via_outbox takes a Session or Connection; for an AsyncSession "
            "await producer.sqlalchemy.aio.send_event_via_outbox"
        )
    return envelope["id"]


def outbox_insert(envelope: Event, text: str) -> tuple[Insert, dict[str, Any]]:
    """The INSERT of the event's row and its parameters (for the sync and async writers)."""
    return _INSERT, {"event_id": envelope["id"], "account": envelope["account"], "payload": text}
