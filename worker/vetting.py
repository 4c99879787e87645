"""Vetting what comes off the queue: anything can be written onto a Redis list.

Another service, another language, an old producer or a bug may push whatever it likes onto
``limechat:events`` (or into a parked retry). Each check here says what is wrong, as text, and
never raises: a deeply nested item (``RecursionError``), a lone surrogate (``UnicodeEncodeError``
when written back to Redis), ``NaN`` (``ValueError`` when re-encoded strictly) or an integer too
long to print are answers, not crashes. What fails a check is dead-lettered as ``malformed``
with the reason; one bad event never costs another.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from producer import contract

#: How a problem of a message whose body cannot be decoded as a whole starts (see salvage).
BODY_UNREADABLE = "body cannot be decoded"
#: How much of an unreadable item or event is kept in its dead letter.
MAX_RAW_CHARS = 4096
#: An event bigger than this as JSON is refused (the producer allows 64 KiB of ``data``).
MAX_EVENT_BYTES = contract.DATA_MAX_BYTES + 16 * 1024

_STR_FIELDS = ("id", "event", "phone", "distinct_id")
_ID_FIELD = re.compile(r'"id"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"')


@dataclass(frozen=True)
class Reading:
    """A queue item as the worker reads it: strictly (UTF-8, no byte-order mark), never raising.

    ``message`` is the envelope when the item is a JSON object at all, ``body`` the decoded
    ``[args, kwargs, options]`` when that could be read too; ``problem`` is '' for an item the
    worker can deliver, else what is wrong with it.
    """

    problem: str
    message: dict[str, Any] | None = None
    body: list[Any] | None = None


def read_message(item: bytes | str) -> Reading:
    """Read a raw queue item; see :class:`Reading`.

    Stricter than kombu and Celery need to *start* on a message: anything they would drop with
    a log line (no delivery tag, another serializer or body encoding, an ETA, an expiry) or
    crash on (a delivery tag that is not a string, a time limit that is not a pair, text that
    is not UTF-8) is refused here, so it reaches the DLQ instead. Celery's other headers are
    not trusted either: the transport hands Celery a message of its own making (see
    ``worker.transport.take``).
    """
    try:
        return _read(item)
    except Exception as exc:  # (nothing an item holds may escape: this is the last check)
        return Reading(f"cannot be read ({type(exc).__name__}: {_short(exc)})")


def _read(item: bytes | str) -> Reading:
    try:
        # As kombu reads it: UTF-8 text (json.loads on bytes would guess UTF-16 or skip a BOM)
        message = json.loads(item.decode("utf-8") if isinstance(item, bytes) else item)
    except RecursionError:
        return Reading("not JSON we can read (nested too deeply)")
    except (ValueError, UnicodeDecodeError) as exc:
        return Reading(f"not JSON ({_short(exc)})")
    if not isinstance(message, dict) or not isinstance(message.get("properties"), dict):
        return Reading("not a Celery message (no properties)")
    properties, headers = message["properties"], message.get("headers")
    if not isinstance(headers, dict) or headers.get("task") != contract.TASK_DELIVER:
        task = headers.get("task") if isinstance(headers, dict) else None
        return Reading(f"not a {contract.TASK_DELIVER} message (task {_short(task)!r})", message)
    problem = _celery_envelope_problem(message, properties, headers)
    if problem:
        return Reading(problem, message)
    try:
        raw = message["body"].encode("utf-8")
        if properties.get("body_encoding") == "base64":
            raw = base64.b64decode(raw, validate=True)
        body = json.loads(raw.decode("utf-8"))
    except RecursionError:
        return Reading(f"{BODY_UNREADABLE} (nested too deeply)", message)
    except (TypeError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        return Reading(f"{BODY_UNREADABLE} ({_short(exc)})", message)
    if not (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and isinstance(body[2], (dict, type(None)))
    ):
        return Reading("body is not [args, kwargs, options]", message)
    return Reading("", message, body)


def _celery_envelope_problem(
    message: dict[str, Any], properties: dict[str, Any], headers: dict[str, Any]
) -> str:
    info = properties.get("delivery_info")
    if not isinstance(properties.get("delivery_tag"), str):
        return "properties.delivery_tag is not a string"
    if not (isinstance(info, dict) and "exchange" in info and "routing_key" in info):
        return "properties.delivery_info lacks exchange/routing_key"
    if message.get("content-type") != "application/json":
        return f"content-type {_short(message.get('content-type'))!r} is not application/json"
    if message.get("content-encoding") != "utf-8":
        return f"content-encoding {_short(message.get('content-encoding'))!r} is not utf-8"
    if properties.get("body_encoding") not in ("base64", None):
        encoding = _short(properties.get("body_encoding"))
        return f"properties.body_encoding {encoding!r} is neither base64 nor absent"
    if not isinstance(message.get("body"), str):
        return "body is not text"
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "headers.id (the task id) is not a string"
    if headers.get("eta") is not None or headers.get("expires") is not None:
        return "headers.eta/expires are set (events are never delayed or expired this way)"
    limit = headers.get("timelimit", [None, None])
    if not (isinstance(limit, list) and len(limit) == 2):
        return "headers.timelimit is not a pair"
    return ""


def envelope_problem(raw: object) -> str:
    """What is wrong with an event envelope taken off the queue, or '' if nothing.

    A sound envelope gets its optional fields filled in (``attempts``, ``history``,
    ``account``) and can then be posted, parked and dead-lettered without an encoding error.
    """
    try:
        return _envelope_problem(raw)
    except Exception as exc:  # (a check must answer, whatever the event holds)
        return f"event cannot be checked ({type(exc).__name__}: {_short(exc)})"


def _envelope_problem(raw: object) -> str:
    if not isinstance(raw, dict):
        return f"an event must be a JSON object, not {type(raw).__name__}"
    if "__malformed__" in raw:  # an unreadable queue item, wrapped by worker.transport
        return f"queue item {_short(raw['__malformed__'])}"
    for name in _STR_FIELDS:
        if not isinstance(raw.get(name), str) or not raw[name]:
            return f"field {name!r} must be a non-empty string"
    if not isinstance(raw.get("data"), dict):
        return "field 'data' must be a JSON object"
    if raw.get("account") is not None and not isinstance(raw["account"], str):
        return "field 'account' must be a string or null"
    attempts = raw.get("attempts", 0)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        return "field 'attempts' must be a non-negative integer"
    history = raw.get("history", [])
    if not isinstance(history, list) or not all(isinstance(a, dict) for a in history):
        return "field 'history' must be a list of objects"
    for name in ("created_at", "slot_at"):
        if name in raw and not _is_finite_number(raw[name]):
            return f"field {name!r} must be a finite number"
    size = _strict_json_size(raw)
    if isinstance(size, str):
        return size
    if size > MAX_EVENT_BYTES:
        return f"event is {size} bytes as JSON; at most {MAX_EVENT_BYTES}"
    raw.setdefault("attempts", 0)
    raw.setdefault("history", [])
    raw.setdefault("account", None)
    return ""


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < 1e15  # (an int too long to print is not a time either)
    )


def _strict_json_size(value: object) -> int | str:
    """Its size as strict UTF-8 JSON (no NaN, no lone surrogate), or what prevents that."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        return len(text.encode("utf-8"))
    except RecursionError:
        return "event is nested too deeply to be written as JSON"
    except UnicodeEncodeError:
        return "event holds text that is not valid Unicode (a lone surrogate)"
    except (ValueError, TypeError) as exc:  # NaN, Infinity, an int too long to print
        return f"event cannot be written as strict JSON ({_short(exc)})"


def storable(raw: object) -> object:
    """``raw`` itself if it can be stored as strict JSON (and is not huge), else a text preview.

    Dead letters keep what arrived so an operator can see it; what cannot be written back as
    JSON (NaN, lone surrogates, nesting too deep) is kept as escaped text instead.
    """
    size = _strict_json_size(raw)
    if isinstance(size, int) and size <= MAX_EVENT_BYTES:
        return raw
    try:
        text = json.dumps(raw, ensure_ascii=True)  # (escapes surrogates, writes NaN as NaN)
    except Exception as exc:
        return f"<a {type(raw).__name__} that cannot be written out: {_short(exc)}>"
    return text[:MAX_RAW_CHARS]


def usable_text(value: object) -> str | None:
    """``value`` if it is a short string Redis can store as UTF-8 (an id, a name), else None."""
    if not isinstance(value, str) or not value or len(value) > 256:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def quarantine_carrier(event_id: str, text: str, problem: str) -> dict[str, Any]:
    """An event that stands for something unreadable, for the task to dead-letter as malformed."""
    return {"id": event_id, "__malformed__": problem, "raw": text[:MAX_RAW_CHARS]}


def salvage(item: bytes | str) -> list[dict[str, Any]] | None:
    """The events of a message whose body cannot be decoded whole, each decoded on its own.

    One event nested too deeply or holding an integer too long to read makes the whole body
    undecodable, and with it every other event of the batch. Split the body's event list
    without decoding it (a scan that needs no recursion), decode each event alone, and put a
    stand-in carrying its text in place of each that fails: the others are delivered.
    Returns None when the body is not ``[[events], kwargs, options]`` even so.
    """
    try:
        message = json.loads(item.decode("utf-8") if isinstance(item, bytes) else item)
        text = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            text = base64.b64decode(text.encode(), validate=True).decode("utf-8")
        parts = split_json_array(text)
        args = split_json_array(parts[0]) if parts and len(parts) == 3 else None
        texts = split_json_array(args[0]) if args and len(args) == 1 else None
    except Exception:
        return None
    return None if texts is None else [_salvaged(t) for t in texts]


def _salvaged(text: str) -> dict[str, Any]:
    try:
        event = json.loads(text)
        problem = envelope_problem(event)
    except Exception as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else _short(exc)
        event = None
    if not problem:
        return dict(event)
    found = _ID_FIELD.search(text)
    event_id = found.group(1) if found else str(uuid.uuid4())
    return quarantine_carrier(event_id, text, f"event cannot be read: {problem}")


def split_json_array(text: str) -> list[str] | None:
    """The texts of the top-level items of JSON array ``text``, or None if it is not one.

    Only strings, brackets and commas are looked at (iteratively); the items are not decoded.
    """
    body = text.strip()
    if len(body) < 2 or body[0] != "[" or body[-1] != "]":
        return None
    inner = body[1:-1]
    items: list[str] = []
    depth, start, in_string, escaped = 0, 0, False, False
    for index, char in enumerate(inner):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                return None
        elif char == "," and depth == 0:
            items.append(inner[start:index].strip())
            start = index + 1
    if in_string or depth:
        return None
    last = inner[start:].strip()
    if last or items:
        items.append(last)
    return items


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."
