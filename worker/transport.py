"""kombu's Redis transport, hardened against what others may push onto our queue.

Stock kombu dies on an item of the Redis list that is not JSON ("Unrecoverable error:
JSONDecodeError", the worker exits and the item is gone), and Celery drops, with a log line,
a message whose body it cannot decode or whose task it does not know. Here every item the
worker pops is checked first; one that is not a ``limechat.deliver`` message we can read is
swapped for a ``deliver`` message carrying it, so it lands in the DLQ as ``malformed`` with
what arrived, and the worker goes on.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis

from producer import contract, wire

#: How much of an unreadable item is kept in its dead letter.
MAX_RAW_CHARS = 4096


def check_message(item: bytes | str) -> str:
    """What is wrong with a raw queue item, or '' if it is a deliver message we can read.

    Stricter than kombu and Celery need to *start* on a message: anything they would drop with
    a log line (no delivery tag, another serializer, an ETA, an expiry), crash on (a delivery
    tag that is not a string, a time limit that is not a pair) or loop on (no task id) is
    refused here, so it reaches the DLQ instead.
    """
    try:
        message = json.loads(item)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON ({exc})"
    if not isinstance(message, dict) or not isinstance(message.get("properties"), dict):
        return "not a Celery message (no properties)"
    properties, headers = message["properties"], message.get("headers")
    if not isinstance(headers, dict) or headers.get("task") != contract.TASK_DELIVER:
        task = headers.get("task") if isinstance(headers, dict) else None
        return f"not a {contract.TASK_DELIVER} message (task {task!r})"
    problem = _envelope_problem(message, properties, headers)
    if problem:
        return problem
    body = message.get("body")
    if not isinstance(body, str):
        return "body is not text"
    try:
        raw = body.encode()
        if properties.get("body_encoding") == "base64":
            raw = base64.b64decode(raw, validate=True)
        decoded = json.loads(raw)
    except (TypeError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        return f"body cannot be decoded ({exc})"
    if not (
        isinstance(decoded, list)
        and len(decoded) == 3
        and isinstance(decoded[0], list)
        and isinstance(decoded[1], dict)
        and isinstance(decoded[2], (dict, type(None)))
    ):
        return "body is not [args, kwargs, options]"
    return ""


def _envelope_problem(
    message: dict[str, Any], properties: dict[str, Any], headers: dict[str, Any]
) -> str:
    info = properties.get("delivery_info")
    if not isinstance(properties.get("delivery_tag"), str):
        return "properties.delivery_tag is not a string"
    if not (isinstance(info, dict) and "exchange" in info and "routing_key" in info):
        return "properties.delivery_info lacks exchange/routing_key"
    if message.get("content-type") != "application/json":
        return f"content-type {message.get('content-type')!r} is not application/json"
    if message.get("content-encoding") != "utf-8":
        return f"content-encoding {message.get('content-encoding')!r} is not utf-8"
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "headers.id (the task id) is not a string"
    if headers.get("eta") is not None or headers.get("expires") is not None:
        return "headers.eta/expires are set (events are never delayed or expired this way)"
    limit = headers.get("timelimit", [None, None])
    if not (isinstance(limit, list) and len(limit) == 2):
        return "headers.timelimit is not a pair"
    return ""


def quarantine(item: bytes | str, problem: str) -> bytes:
    """A deliver message that carries ``item``, for the task to dead-letter as malformed."""
    text = item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
    carrier: Any = {"id": str(uuid.uuid4()), "__malformed__": problem, "raw": text[:MAX_RAW_CHARS]}
    return wire.encode_message([carrier]).encode()


class _CheckedBRPOP:
    """Mixin for the channel's Redis client: vets every item BRPOP hands to kombu."""

    def parse_response(self, connection: Any, command_name: str, **options: Any) -> Any:
        response = super().parse_response(  # type: ignore[misc]
            connection, command_name, **options
        )
        if command_name == "BRPOP" and response:
            queue, item = response
            problem = check_message(item)
            if problem:
                return queue, quarantine(item, problem)
        return response


@functools.cache
def _checked(client_class: type) -> type:
    return type(f"Checked{client_class.__name__}", (_CheckedBRPOP, client_class), {})


class Channel(kombu_redis.Channel):
    def _get_client(self) -> Any:
        client = super()._get_client()  # type: ignore[misc]
        if isinstance(client, functools.partial):  # kombu's global_keyprefix client
            return functools.partial(_checked(client.func), *client.args, **client.keywords)
        return _checked(client)


class Transport(kombu_redis.Transport):
    Channel = Channel
