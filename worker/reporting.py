"""Sentry: dead letters reported once, credential failures as errors, nothing secret sent.

Off unless ``SENTRY_DSN`` is set. Celery's control flow (Retry, Ignore, Reject) is never
reported (the Celery integration skips it), and log lines become breadcrumbs, not events, so a
dead letter is one event: the one :func:`report_dead_letter` sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from . import __version__
from .logs import mask_phones_in
from .settings import Settings

FILTERED = "[Filtered]"
#: Every token this process has held (a reload adds the new ones and keeps the old: still
#: secrets), scrubbed from whatever goes to Sentry.
TOKENS: set[str] = set()


def init_sentry(settings: Settings, *, transport: Transport | None = None) -> bool:
    """Start Sentry if ``SENTRY_DSN`` is set; True if it is on."""
    if not settings.sentry_dsn:
        return False
    remember_tokens(settings.account_set().tokens())
    scrub = make_scrubber(TOKENS)
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment or None,
        release=f"limechat-events@{__version__}",
        integrations=[
            CeleryIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=None),
        ],
        before_send=lambda event, hint: scrub(event),
        before_breadcrumb=lambda crumb, hint: scrub(crumb),
        transport=transport,
    )
    return True


def remember_tokens(tokens: Iterable[str]) -> None:
    TOKENS.update(t for t in tokens if t)


def report_dead_letter(entry: dict[str, Any]) -> None:
    """One Sentry event per dead letter, grouped by event name and reason, tagged with the
    account (the worker passes the one it went to; ``default`` if none is known)."""
    event = entry.get("event") or {}
    name = str(event.get("event"))
    reason = str(entry.get("reason"))
    status = entry.get("status")
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("account", str(entry.get("account") or "default"))
        scope.set_tag("event_name", name)
        scope.set_tag("reason", reason)
        scope.set_tag("status", "none" if status is None else str(status))
        scope.fingerprint = ["limechat-dead-letter", name, reason]
        scope.set_context(
            "dead_letter",
            {
                "event_id": entry.get("event_id"),
                "attempts": entry.get("attempts"),
                "status": status,
                "error": entry.get("error"),
                "response_body": (entry.get("response_body") or "")[:512],
            },
        )
        # 401/403 mean the token is wrong or expired: every event will fail until it is fixed.
        sentry_sdk.capture_message(
            f"dead-lettered {name}: {reason}", level="error" if reason == "auth" else "warning"
        )


def make_scrubber(tokens: str | Collection[str]) -> Callable[[Any], Any]:
    """A function that replaces the tokens (a set may grow later) and masks phone numbers in
    every string it finds."""
    every = {tokens} if isinstance(tokens, str) else tokens

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for token in sorted(every, key=len, reverse=True):
                if token and token in value:
                    value = value.replace(token, FILTERED)
            return mask_phones_in(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, tuple):
            return tuple(clean(v) for v in value)
        return value

    return clean
