"""How values are shown on pages: times, masked phones, an entry made fit to display."""

from __future__ import annotations

import datetime
import json
from typing import Any

from ..logs import mask_phone, mask_phones_in


def when(epoch: object) -> str:
    if not isinstance(epoch, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ"
    )


def masked_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its history, its phone masked as the logs mask it."""
    shown = {k: v for k, v in event.items() if k != "history"}
    if shown.get("phone"):
        shown["phone"] = mask_phone(shown["phone"])
    return shown


def event_json(event: dict[str, Any]) -> str:
    """The event as indented JSON, every phone-like number in it masked (data may hold some)."""
    return mask_phones_in(json.dumps(masked_event(event), ensure_ascii=False, indent=2))


def text(value: object) -> str:
    """Free text from LimeChat or an error, phone-like numbers masked."""
    return mask_phones_in(str(value)) if value not in (None, "") else "-"
