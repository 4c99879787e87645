"""A real worker with faults injected by the events it gets, for tests that need a real worker
to fail in ways the receiver cannot make it fail.

    python -m tests.integration.faulty_worker

runs ``limechat-events worker`` unchanged (one process: ``LIMECHAT_WORKER_PROCESSES=1``),
except that:

- an event whose data has ``"inject": "bug"`` makes the POST raise ``RuntimeError``: a bug of
  ours while handling that one event (what the ``internal_error`` dead letter is for);
- the first message carrying an event whose data has ``"inject": "redis_once"`` fails with a
  Redis error before anything is recorded: the task hands it back (Celery's ``Reject``) and it
  is delivered again;
- once ready, it logs a phone number through one of Celery's loggers and the root logger:
  the log lines its tests read.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import signals

from worker.cli import main
from worker.delivery import Deliverer
from worker.limechat import LimechatClient

PHONE = "+915673412780"
READY = "faulty worker: logged a phone through every logger"

_post = LimechatClient.post
_deliver_message = Deliverer.deliver_message
_failed_once: set[str] = set()


def _injected(event: object) -> object:
    data = event.get("data") if isinstance(event, dict) else None
    return data.get("inject") if isinstance(data, dict) else None


def _post_with_a_bug(self: LimechatClient, event: Any, account: Any) -> Any:
    if _injected(event) == "bug":
        raise RuntimeError("injected: a bug while handling this event")
    return _post(self, event, account)


def _redis_fails_once(self: Deliverer, *args: Any, **kwargs: Any) -> Any:
    events = args[0][0] if args and args[0] and isinstance(args[0][0], list) else []
    for event in events:
        if _injected(event) == "redis_once" and event["id"] not in _failed_once:
            _failed_once.add(event["id"])
            raise redis.ConnectionError("injected: Redis went away before the outcome was written")
    return _deliver_message(self, *args, **kwargs)


def _log_a_phone(**_: Any) -> None:
    logging.getLogger("celery.worker.consumer").warning("celery logger: call %s", PHONE)
    logging.getLogger().warning("root logger: call %s", PHONE)
    logging.getLogger("limechat_events.test").warning(READY)


if __name__ == "__main__":
    LimechatClient.post = _post_with_a_bug  # type: ignore[method-assign]
    Deliverer.deliver_message = _redis_fails_once  # type: ignore[method-assign]
    signals.worker_ready.connect(_log_a_phone, weak=False)
    main(["worker"])
