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
    """What is wrong with a raw queue item, or '' if it is a deliver message we can read."""
    try:
        message = json.loads(item)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON ({exc})"
    if not isinstance(message, dict) or not isinstance(message.get("properties"), dict):
        return "not a Celery message (no properties)"
    headers = message.get("headers")
    if not isinstance(headers, dict) or headers.get("task") != contract.TASK_DELIVER:
        task = headers.get("task") if isinstance(headers, dict) else None
        return f"not a {contract.TASK_DELIVER} message (task {task!r})"
    body = message.get("body")
    if not isinstance(body, str):
        return "body is not text"
    try:
        raw = body.encode()
        if message["properties"].get("body_encoding") == "base64":
            raw = base64.b64decode(raw, validate=True)
        decoded = json.loads(raw)
    except (TypeError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        return f"body cannot be decoded ({exc})"
    if not (isinstance(decoded, list) and len(decoded) == 3):
        return "body is not [args, kwargs, options]"
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
