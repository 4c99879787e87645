"""What the worker hands to kombu for each item it takes off the queue: never one Celery chokes on.

Celery reads many headers and options of a task message, and a few odd values there kill the
worker or lose the message (``stamped_headers: 5``, ``shadow: {}``, ``delivery_info: "x"`` in
the options, another queue's routing key that a restore would push the message to). So the
worker does not pass on what another writer made: a message exactly as ``producer/wire.py``
writes it goes as it is; any other readable one is rewritten in that form, carrying the same
events; an unreadable one becomes a stand-in carrying what arrived, for the DLQ. Each gets a
fresh delivery tag, since kombu keys its unacked record by the tag and a writer may reuse one.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, cast

from producer import wire

from .vetting import (
    BODY_UNREADABLE,
    envelope_problem,
    quarantine_carrier,
    read_message,
    salvage,
    storable,
    usable_text,
)

log = logging.getLogger("limechat_events.worker")

#: The header keys producer/wire.py writes (and kombu's "redelivered", when it restores one).
_HEADERS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
    }
)
_PROPERTIES = frozenset(
    {
        "correlation_id",
        "delivery_mode",
        "delivery_info",
        "priority",
        "body_encoding",
        "delivery_tag",
    }
)
_ENVELOPE = frozenset({"body", "content-encoding", "content-type", "headers", "properties"})
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def take(item: bytes | str, queue: str) -> dict[str, Any]:
    """The message to hand to kombu for ``item``, taken off ``queue`` (never raises)."""
    try:
        message = _take(item, queue)
    except Exception as exc:  # (a bug of ours must not kill the worker: carry it to the DLQ)
        log.exception("could not take a queue item; it goes to the DLQ")
        carrier = quarantine_carrier(str(uuid.uuid4()), _text(item), f"cannot be taken: {exc!r}")
        message = _made([carrier], redelivered=True)
    message["properties"]["delivery_tag"] = uuid.uuid4().hex
    return message


def _take(item: bytes | str, queue: str) -> dict[str, Any]:
    reading = read_message(item)
    if reading.problem:
        salvaged = salvage(item) if reading.problem.startswith(BODY_UNREADABLE) else None
        carrier = quarantine_carrier(str(uuid.uuid4()), _text(item), reading.problem)
        return _made(salvaged or [carrier], redelivered=True)
    if reading.message is not None and _ours(reading.message, reading.body, queue):
        return reading.message
    log.info("rewrote a message another writer made (task id %s)", _task_id(reading.message))
    return _made(_events_of(reading.body), redelivered=_redelivered(reading.message))


def _text(item: bytes | str) -> str:
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item


def _made(events: list[Any], *, redelivered: bool) -> dict[str, Any]:
    """A message as producer/wire.py writes it; an unsound event is carried by a stand-in."""
    sound = [
        event if _carried(event) or not envelope_problem(event) else _stand_in(event)
        for event in events
    ]
    return dict(json.loads(wire.encode_message(cast(Any, sound), redelivered=redelivered)))


def _carried(event: Any) -> bool:
    """A stand-in already (from vetting.salvage, or one of ours) that can be written out."""
    return isinstance(event, dict) and "__malformed__" in event and storable(event) is event


def _events_of(body: list[Any] | None) -> list[Any]:
    args = body[0] if body else None
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], list):
        return list(args[0])
    text = json.dumps(storable(body), ensure_ascii=True)
    return [quarantine_carrier(str(uuid.uuid4()), text, "is not deliver(list of events)")]


def _stand_in(event: Any) -> dict[str, Any]:
    event_id = usable_text(event.get("id")) if isinstance(event, dict) else None
    kept = storable(event)
    text = kept if isinstance(kept, str) else json.dumps(kept, ensure_ascii=True)
    problem = f"event: {envelope_problem(event)}"
    return quarantine_carrier(event_id or str(uuid.uuid4()), text, problem)


def _ours(message: dict[str, Any], body: list[Any] | None, queue: str) -> bool:
    """Whether ``message`` is exactly as producer/wire.py (or kombu's restore) writes it."""
    if body is None or message.keys() != _ENVELOPE:
        return False
    headers, properties = message["headers"], message["properties"]
    info = properties.get("delivery_info")
    return (
        headers.keys() - {"redelivered"} == _HEADERS
        and properties.keys() == _PROPERTIES
        and isinstance(info, dict)
        and info.keys() - {"redelivered"} == {"exchange", "routing_key"}
        and (info["exchange"], info["routing_key"]) == ("", queue)
        and headers["lang"] == "py"
        and all(headers[k] is None for k in ("shadow", "eta", "expires", "group", "group_index"))
        and headers["parent_id"] is None
        and headers["retries"] == 0
        and headers["timelimit"] == [None, None]
        and headers["ignore_result"] is True
        and all(isinstance(headers[k], str) for k in ("id", "root_id", "argsrepr", "origin"))
        and headers["kwargsrepr"] == "{}"
        and isinstance(headers.get("redelivered", False), bool)
        and isinstance(info.get("redelivered", False), bool)
        and properties["delivery_mode"] == 2
        and properties["priority"] == 0
        and properties["body_encoding"] == "base64"
        and isinstance(properties["correlation_id"], str)
        and body[1] == {}
        and body[2] == _EMBED
        and len(body[0]) == 1
        and isinstance(body[0][0], list)
    )


def _redelivered(message: dict[str, Any] | None) -> bool:
    if message is None:
        return True
    info = message["properties"].get("delivery_info")
    return message["headers"].get("redelivered") is True or (
        isinstance(info, dict) and info.get("redelivered") is True
    )


def _task_id(message: dict[str, Any] | None) -> str:
    task_id = (message or {}).get("headers", {}).get("id")
    return task_id if isinstance(task_id, str) else "?"
