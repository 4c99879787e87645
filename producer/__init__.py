"""What web apps import: ``send_event``, ``send_events`` and the errors they raise.

>>> from producer import send_event
>>> send_event("order_placed", phone="+915673412780", data={"order_id": "98765"})  # doctest: +SKIP
'6f1c...'
"""

from __future__ import annotations

from .api import Producer, configure, ping, send_event, send_events
from .config import ProducerSettings
from .errors import ConfigError, EnqueueError, LimechatEventsError, ValidationError

__all__ = [
    "ConfigError",
    "EnqueueError",
    "LimechatEventsError",
    "Producer",
    "ProducerSettings",
    "ValidationError",
    "configure",
    "ping",
    "send_event",
    "send_events",
]
