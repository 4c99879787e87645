"""Log set-up: one short line per outcome, phones masked, plain text or JSON lines.

``LOG_FORMAT=json`` writes one JSON object per line with the outcome's fields (``evt``,
``event``, ``status``, ``attempt``, ``ms``, ...) as keys, for log pipelines.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer.envelope import Event

    from .limechat import Answer

LOGGER = "limechat_events"

# A run of 8-15 digits with an optional leading '+': an E.164 number or something like it.
# Not followed by '-' or '.digit', so the first group of a uuid or an epoch time is left alone.
_PHONE = re.compile(r"(?<![\w.-])\+?\d{8,15}(?![\d-]|\.\d)")
# The same with single spaces or hyphens between groups, as people write them
# (``+91 98765 43210``, ``+1-415-555-0100``): only after a '+', which uuids and times never have.
_SPACED_PHONE = re.compile(r"(?<![\w.+-])\+\d{1,4}(?:[ -]\d{1,6}){1,5}(?![\w-])")


def mask_phone(phone: object) -> str:
    """``+915673412780`` -> ``+91******2780``: enough to tell numbers apart, not to dial them."""
    text = str(phone)
    if len(text) <= 6:
        return "*" * len(text)
    return text[:3] + "*" * (len(text) - 7) + text[-4:]


def mask_phones_in(text: str) -> str:
    """Every phone-like number in ``text`` masked (for third-party log lines and Sentry)."""
    text = _SPACED_PHONE.sub(_mask_spaced, text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def _mask_spaced(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = sum(c.isdigit() for c in found)
    return mask_phone(found) if 8 <= digits <= 15 else found


def log_outcome(
    logger: logging.Logger,
    level: int,
    what: str,
    event: Event,
    answer: Answer | None,
    *,
    account: str | None = None,
    **extra: object,
) -> None:
    """``delivered evt=... event=order_placed status=200 attempt=2 ms=143 account=brand-a
    phone=+91******2780`` (``account``: the one it went to, default: the one it names)."""
    fields: dict[str, object] = {
        "evt": event.get("id"),
        "event": event.get("event"),
        "status": answer.status if answer else None,
        "attempt": event.get("attempts", 0),
        "ms": answer.ms if answer else None,
        **extra,
        "account": account or event.get("account"),
    }
    if event.get("phone"):
        fields["phone"] = mask_phone(event.get("phone"))
    if logger.isEnabledFor(level):
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        logger.log(level, "%s %s", what, text, extra={"outcome": what, "fields": fields})


class MaskPhones(logging.Filter):
    """Masks phone-like numbers in every record, whoever logged it (Celery prints task args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "fields", None) is None:  # our own lines are masked already
            message = record.getMessage()
            masked = mask_phones_in(message)
            if masked != message:
                record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields is not None:
            payload["msg"] = getattr(record, "outcome", "")
            payload.update({k: v for k, v in fields.items() if v is not None})
        else:
            payload["msg"] = record.getMessage()
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def configure(level: str, fmt: str = "text") -> None:
    """Our handler on the root logger (so Celery's lines get the same treatment)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(MaskPhones())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_limechat", False)]:
        root.removeHandler(old)
    handler._limechat = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(LOGGER).setLevel(level)
    # Celery's own "Task received / succeeded" lines double ours and cost time per message.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(quiet)
