"""``send_event_via_outbox``: the event written in the current transaction, relayed later."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..outbox import outbox_envelope


def send_event_via_outbox(
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
    using: str | None = None,
) -> str:
    """Validate an event and insert it into ``limechat_outbox``; returns its id.

    The row commits or rolls back with the caller's transaction (``transaction.atomic``, or
    ``ATOMIC_REQUESTS``; outside one it commits at once, on its own). The relay command puts
    it on the queue under this id. Raises :class:`~producer.ValidationError` (nothing written)
    or the database's own error; never :class:`~producer.EnqueueError`: Redis is not touched.

    No ``idempotency_key``: the outbox row is written exactly when the transaction commits,
    which is the guarantee a key would give. ``using`` is the database alias.
    """
    # The model is imported here, not at the top: this module is imported with the package,
    # which settings.py may do before the app registry is ready.
    from .models import OutboxEvent

    envelope, text = outbox_envelope(
        event, phone=phone, distinct_id=distinct_id, data=data, account=account
    )
    row = OutboxEvent(
        event_id=envelope["id"],
        account=envelope["account"],
        payload=text,
        created_at=datetime.fromtimestamp(envelope["created_at"], tz=timezone.utc),
    )
    row.save(using=using, force_insert=True)
    return envelope["id"]
