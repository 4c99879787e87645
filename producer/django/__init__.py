"""The Django app ``producer.django``: events sent only if the transaction commits, and an outbox.

Add ``"producer.django"`` to ``INSTALLED_APPS`` (for the outbox's table and its relay command);
``send_event_on_commit`` alone works without it.

- :func:`send_event_on_commit`: validated now, enqueued by ``transaction.on_commit``. Nothing is
  sent if the transaction rolls back; an event whose enqueue fails after the commit (Redis
  down) is logged at ERROR and lost.
- :func:`send_event_via_outbox`: written to the ``limechat_outbox`` table in the current
  transaction; ``python manage.py limechat_outbox_relay`` moves committed rows to the queue.
  Nothing is lost when Redis is down or a process dies after the commit.

Importing this package imports Django (the ``django`` extra), never a model: it is safe to
import from ``settings.py``, ``INSTALLED_APPS`` and ``AppConfig.ready``.
"""

from __future__ import annotations

from .oncommit import send_event_on_commit
from .outbox import send_event_via_outbox

__all__ = ["send_event_on_commit", "send_event_via_outbox"]
