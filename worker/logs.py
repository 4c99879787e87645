"""Log set-up and the masking that keeps phone numbers out of log lines."""

from __future__ import annotations

import logging
import sys

LOGGER = "limechat_events"


def mask_phone(phone: object) -> str:
    """``+915673412780`` -> ``+91******2780``: enough to tell numbers apart, not to dial them."""
    text = str(phone)
    if len(text) <= 6:
        return "*" * len(text)
    return text[:3] + "*" * (len(text) - 7) + text[-4:]


def configure(level: str) -> None:
    """Plain ``time level logger message`` lines on stderr for our loggers."""
    logger = logging.getLogger(LOGGER)
    if not any(getattr(h, "_limechat", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._limechat = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # Celery's own "Task received / succeeded" lines double ours and cost time per message.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(quiet)
