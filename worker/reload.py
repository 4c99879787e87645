"""``SIGHUP``: re-read ``LIMECHAT_ACCOUNTS_FILE`` without stopping.

Added accounts deliver from then on, a rotated token is used from the next request, a removed
account's events are dead-lettered ``unknown_account`` (replay them once it is back). A file
that no longer reads is refused, with the reason, and the accounts in use stay. Nothing in
flight is dropped: requests already out finish with the token they went with, and the reload
is logged as done once they have come back. (A ``token_env`` variable is read from this
process' environment, which a signal cannot change: rotate those with a restart.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

from producer.errors import ConfigError

from .accounts import Accounts
from .delivery import Deliverer
from .reporting import remember_tokens
from .settings import Settings

log = logging.getLogger("limechat_events.worker")

_one_at_a_time = threading.Lock()


def reload_accounts(
    settings: Settings, deliverer: Deliverer, environ: Mapping[str, str] = os.environ
) -> bool:
    """Read the accounts file again and deliver with it; False (logged) if it is refused."""
    with _one_at_a_time:
        if not settings.accounts_file:
            log.warning("SIGHUP: no LIMECHAT_ACCOUNTS_FILE to re-read; nothing changes")
            return False
        old = deliverer.accounts
        try:
            new = settings.load_accounts(environ)
        except ConfigError as exc:
            log.error(
                "SIGHUP: accounts file refused, still delivering for %s: %s",
                ", ".join(old.ids),
                exc,
            )
            return False
        except Exception as exc:
            # (a bug of ours on some odd file: logged without a traceback, whose frames hold
            # the file's text and so tokens not yet known to the scrubber, and never raised
            # into the thread, where Sentry would send those frames)
            log.error(
                "SIGHUP: accounts file could not be read (%s), still delivering for %s",
                type(exc).__name__,
                ", ".join(old.ids),
            )
            return False
        remember_tokens(new.tokens())  # (before any can show up anywhere)
        drained = deliverer.use_accounts(new)
        log.info("accounts reloaded from %s: %s", settings.accounts_file, changes(old, new))
        if not drained:
            log.warning("requests sent with the old accounts are still out after 30 s")
        return True


def changes(old: Accounts, new: Accounts) -> str:
    """What a reload changed, by account id (never a token)."""
    added = sorted(set(new.by_id) - set(old.by_id))
    removed = sorted(set(old.by_id) - set(new.by_id))
    both = set(old.by_id) & set(new.by_id)
    rotated = sorted(a for a in both if old.by_id[a].token != new.by_id[a].token)
    rerated = sorted(
        a
        for a in both
        if (old.by_id[a].rate_limit, old.by_id[a].burst)
        != (new.by_id[a].rate_limit, new.by_id[a].burst)
    )
    parts = [f"{len(new.by_id)} accounts"]
    for what, ids in (
        ("added", added),
        ("removed", removed),
        ("new token", rotated),
        ("new rate", rerated),
    ):
        if ids:
            parts.append(f"{what}: {', '.join(ids)}")
    if old.default != new.default:
        parts.append(f"default: {new.default}")
    return "; ".join(parts)


def install(settings: Settings, deliverer: Deliverer) -> None:
    """Reload on SIGHUP (from the main thread only; the work runs in a thread of its own, so
    the signal handler never waits on a lock a delivery holds)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_hup(signum: int, frame: Any) -> None:
        threading.Thread(
            target=reload_accounts, args=(settings, deliverer), name="limechat-reload", daemon=True
        ).start()

    signal.signal(signal.SIGHUP, on_hup)
