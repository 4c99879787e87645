"""SQLAlchemy integration: events sent only if the transaction commits, and the outbox.

``pip install 'limechat-events[sqlalchemy]'``. Nothing else in the package imports this one,
so a web app without the extra never loads SQLAlchemy. Import it at module level (at the app's
start): the import registers the on-commit hooks on the ``Session`` class, which SQLAlchemy
does not allow while another thread's session is running them.

- :func:`send_event_on_commit` validates now and enqueues after the session commits (nothing
  if it rolls back). Redis down at that moment: the event is logged at ERROR and lost.
- :func:`send_event_via_outbox` writes the event into ``limechat_outbox`` in the session's
  transaction; ``limechat-events outbox-relay`` moves committed rows to the queue. Nothing is
  lost between the commit and the queue (docs/outbox.md).
"""

from __future__ import annotations

from .oncommit import send_event_on_commit
from .table import OUTBOX_TABLE, create_outbox_table, define_outbox_table, outbox_table
from .writer import send_event_via_outbox

__all__ = [
    "OUTBOX_TABLE",
    "create_outbox_table",
    "define_outbox_table",
    "outbox_table",
    "send_event_on_commit",
    "send_event_via_outbox",
]
