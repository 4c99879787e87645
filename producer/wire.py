"""Celery task messages written straight onto kombu's Redis list.

Why not ``app.send_task``: it costs about half a millisecond of Python per call, cannot be
pipelined with our own commands, and cannot be combined atomically with the idempotency check
(``SET NX`` then publish in one Lua call) or with moving entries off the retry schedule and the
DLQ (publish and remove in one transaction). The format below is Celery's task protocol 2 inside
kombu's Redis envelope, exactly what ``send_task`` writes (checked by the integration tests,
which run a real Celery worker on these messages).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
from collections.abc import Sequence

from . import contract
from .envelope import Event, new_id

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def encode_message(
    events: Sequence[Event], *, queue: str = contract.QUEUE, redelivered: bool = False
) -> str:
    """One ``deliver(events)`` task message, serialised as kombu's Redis transport stores it.

    ``redelivered`` marks a message that carries events which may have reached LimeChat
    already (retries promoted from the schedule, a batch handed back, replays, imports): the
    worker reads the delivered markers only for such messages, as for those kombu restores.
    """
    body = json.dumps([[list(events)], {}, _EMBED], ensure_ascii=False, allow_nan=False)
    first = events[0]["id"] if events else ""
    # What `celery inspect` and the worker's log show instead of the whole payload.
    argsrepr = f"<{len(events)} event(s), first {first}>"
    return _template(queue, redelivered) % {
        "id": f'"{new_id()}"',
        "argsrepr": json.dumps(argsrepr),
        "body": f'"{base64.b64encode(body.encode("utf-8")).decode("ascii")}"',
        "tag": f'"{new_id()}"',
    }


@functools.lru_cache(maxsize=16)
def _template(queue: str, redelivered: bool) -> str:
    """The message's JSON with ``%(name)s`` where each message's own values go.

    Written once per kind by ``json.dumps`` itself (so it is the JSON it always was); filling
    it in costs a fraction of encoding the whole envelope again for every event.
    """
    slot = {name: f"@@{name}@@" for name in ("id", "argsrepr", "body", "tag")}
    headers: dict[str, object] = {
        "lang": "py",
        "task": contract.TASK_DELIVER,
        "id": slot["id"],
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": slot["id"],
        "parent_id": None,
        "argsrepr": slot["argsrepr"],
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
    }
    delivery_info: dict[str, object] = {"exchange": "", "routing_key": queue}
    if redelivered:  # (where kombu's own restore puts the flag)
        headers["redelivered"] = delivery_info["redelivered"] = True
    message = {
        "body": slot["body"],
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": slot["id"],
            "delivery_mode": 2,
            "delivery_info": delivery_info,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": slot["tag"],
        },
    }
    text = json.dumps(message).replace("%", "%%")
    for name, marker in slot.items():
        text = text.replace(f'"{marker}"', f"%({name})s")
    return text


def encode_batches(
    events: Sequence[Event], batch_size: int, *, redelivered: bool = False
) -> list[str]:
    """Messages of at most ``batch_size`` events each, in order."""
    return [
        encode_message(events[i : i + batch_size], redelivered=redelivered)
        for i in range(0, len(events), batch_size)
    ]
