"""Celery's remote control on our transport: its queue items are not events, and must not hurt.

``celery inspect`` broadcasts a command on the ``celery.pidbox`` fanout exchange (Redis
PUB/SUB), and each worker LPUSHes its reply onto the asker's ``<id>.reply.celery.pidbox`` list.
Those items are not ``deliver`` messages: the transport must not vet them into the DLQ, nor move
them through a taking list. It passes them to kombu as they are, but only once kombu can make a
message of them; anything else (a hostile or broken item) is logged and dropped, where stock
kombu would raise in the consumer's loop and stop the process. Dropping is safe: a command or a
reply is best-effort, and the asker times out.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger("limechat_events.worker")

#: Every queue of Celery's mailbox ends so: ``<node>.celery.pidbox``, ``<id>.reply.celery.pidbox``.
SUFFIX = ".pidbox"
#: kombu's separator before a priority suffix in a list's name.
_PRIORITY_SEP = "\x06\x16"


def is_control_queue(name: str | bytes) -> bool:
    """Whether ``name`` (a queue, or its list in Redis) is one of Celery's remote control."""
    return bytes_to_str(name).rsplit(_PRIORITY_SEP, 1)[0].endswith(SUFFIX)


def readable(item: bytes | str) -> dict[str, Any] | None:
    """``item`` decoded as kombu will decode it, if kombu can make a message of it; else None."""
    try:
        message = loads(bytes_to_str(item))
    except Exception:  # (kombu's decoder raises more than ValueError on odd "__type__" objects)
        return None
    return message if problem(message) is None else None


def problem(message: Any) -> str | None:
    """What keeps kombu from making a message of decoded ``message``, or None if nothing does."""
    if not isinstance(message, dict):
        return "not a JSON object"
    properties = message.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return "no properties with a delivery_tag"
    for key in ("headers",):
        if message.get(key) is not None and not isinstance(message[key], dict):
            return f"{key} is not an object"
    if properties.get("delivery_info") is not None and not isinstance(
        properties["delivery_info"], dict
    ):
        return "delivery_info is not an object"
    if message.get("content-encoding") is not None and not isinstance(
        message["content-encoding"], str
    ):
        return "content-encoding is not text"
    if message.get("content-type") not in (None, "application/json"):
        return "not JSON (Celery's remote control accepts only JSON)"
    body, encoding = message.get("body"), properties.get("body_encoding")
    if body and not isinstance(body, str):
        return "body is not text"
    if encoding not in (None, "base64"):
        return "unknown body_encoding"
    if body and encoding == "base64":
        try:
            base64.b64decode(body.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return "body is not base64"
    return None


def command_problem(message: dict[str, Any]) -> str | None:
    """What keeps Celery from running broadcast ``message`` (readable by kombu) as a command.

    Celery handles a command that fails by closing and reopening the worker's remote-control
    channel; one that cannot even be dispatched (a body that is not an object, no method, an
    odd ``reply_to`` or clock) would do that on every such item. It is dropped before.
    """
    headers = message.get("headers") or {}
    clock = headers.get("clock")
    if clock is not None and (not isinstance(clock, int) or isinstance(clock, bool)):
        return "clock is not a whole number"
    if message.get("content-type") != "application/json":
        return "not JSON"
    if message.get("properties", {}).get("body_encoding") != "base64":
        return "body not base64"
    try:
        body = json.loads(base64.b64decode(message.get("body") or ""))
    except (ValueError, UnicodeDecodeError):
        return "body is not JSON"
    if not isinstance(body, dict) or not all(isinstance(key, str) for key in body):
        return "body is not an object"
    if not isinstance(body.get("method"), str):
        return "no method"
    if not isinstance(body.get("arguments"), (dict, type(None))):
        return "arguments is not an object"
    for key in ("destination", "pattern", "matcher", "ticket"):
        if not isinstance(body.get(key), (str, list, type(None))):
            return f"{key} is not text"
    reply_to = body.get("reply_to")
    if reply_to is not None and not (
        isinstance(reply_to, dict)
        and isinstance(reply_to.get("exchange"), str)
        and isinstance(reply_to.get("routing_key"), str)
    ):
        return "reply_to is not {exchange, routing_key}"
    return None


def dropped(where: str, item: Any) -> None:
    """Log a remote-control item that is dropped because kombu could not read it."""
    shown = repr(item)
    log.warning(
        "dropped an unreadable remote-control item from %s: %s",
        where,
        shown if len(shown) <= 300 else shown[:300] + "...",
    )
