"""The outbox table: events written with the business data, waiting for the relay.

The layout is the one SQLAlchemy's outbox uses too (``producer.sqlalchemy``), so one relay
design and one page of documentation cover both: ``id`` is the relay's order, ``payload`` the
event's JSON envelope as :func:`producer.outbox.outbox_envelope` wrote it.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from django.db import models

from .outbox import TABLE


class OutboxEvent(models.Model):
    id: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    event_id: models.TextField[str, str] = models.TextField()
    account: models.TextField[str | None, str | None] = models.TextField(null=True)
    payload: models.TextField[str, str] = models.TextField()
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        db_table = TABLE
        # A constraint rather than unique=True: on PostgreSQL Django adds a second, LIKE-only
        # index to a unique text field, one more index every outbox write would maintain.
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["event_id"], name="limechat_outbox_event_id_key")
        ]

    def __str__(self) -> str:
        return f"outbox row {self.id} (event {self.event_id})"
