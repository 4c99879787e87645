"""What Celery's remote control may do to a delivering worker, and how each process is named.

Remote control is on by default (``LIMECHAT_REMOTE_CONTROL``), for ``celery inspect``,
``celery status`` and Flower. Four commands are refused, because each would break the promise
that nothing accepted is lost silently: ``revoke`` (and ``terminate``, and
``revoke_by_stamped_headers``) make Celery acknowledge a revoked message unrun, dropping its
events; ``cancel_consumer`` leaves a worker alive and taking nothing, and ``add_consumer`` makes
it take another application's queue, whose messages it would dead-letter as malformed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery.worker.control import Panel
from celery.worker.request import Request

log = logging.getLogger("limechat_events.worker")

_LOST = "a revoked message is acknowledged unrun: its events would be lost"
REFUSED = {
    "revoke": _LOST,
    "terminate": _LOST,
    "revoke_by_stamped_headers": _LOST,
    "add_consumer": "a worker takes only its own queue",
    "cancel_consumer": "a worker that stops taking its queue would look alive and do nothing",
    # Celery's own rate limit holds taken messages in worker memory: one held past the
    # visibility timeout is put back and sent twice, and the copies starve the queue
    # (LIMECHAT_RATE_LIMIT is the cluster-wide limit). Time limits kill a POST mid-way.
    "rate_limit": "held messages outlive the visibility timeout and are sent twice",
    "time_limit": "a POST cut short may have reached LimeChat: use LIMECHAT_TIMEOUT_SECONDS",
}


def refuse_unsafe_commands() -> None:
    """Replace the handlers of :data:`REFUSED` commands in this process by refusals."""
    for name, why in REFUSED.items():
        Panel.data[name] = _refusal(name, why)


def _refusal(name: str, why: str) -> Callable[..., dict[str, str]]:
    def refuse(state: Any, **_: Any) -> dict[str, str]:
        log.warning("refused the remote-control command %s: %s", name, why)
        return {"error": f"limechat-events refuses {name}: {why}"}

    return refuse


def nodename(given: str, pid: int | None = None) -> str:
    """``given`` (``name@host``) made unique to this process: ``name-<pid>@host``.

    Every process of a ``limechat-events worker`` is a worker of its own, and two with the same
    name look like one to ``celery status`` (their replies overwrite each other).
    """
    pid = os.getpid() if pid is None else pid
    name, at, host = given.partition("@")
    suffix = f"-{pid}"
    return given if name.endswith(suffix) else f"{name}{suffix}{at}{host}"


class PayloadHiddenRequest(Request):
    """A task request that shows ``inspect active`` (and Flower) its argsrepr, not the events.

    Celery's ``active``, ``reserved`` and ``query_task`` send a request's whole arguments;
    here those are the events, with phone numbers and user data. ``argsrepr`` (written by
    producer/wire.py) says how many events and the first one's id.
    """

    def info(self, safe: bool = False) -> Any:
        return super().info(safe=True)
