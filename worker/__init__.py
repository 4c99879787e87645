"""The delivery side: Celery app, delivery task, LimeChat client, scheduler, DLQ and CLI."""

from __future__ import annotations

__version__ = "0.1.0"
