"""kombu's Redis transport, hardened against crashes and against what others push onto our queue.

Messages are taken with BLMOVE into a taking list (see worker/taking.py) instead of with
BRPOP, so a worker killed between taking a message and recording it as unacknowledged loses
nothing.

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
import logging
import time
import uuid
from collections.abc import Callable
from queue import Empty
from typing import Any, cast

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import ResponseError

from producer import contract, wire
from worker import taking

log = logging.getLogger("limechat_events.worker")

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


#: The blocking pops whose reply carries a message the worker is about to take.
_TAKING_COMMANDS = ("BLMOVE", "BRPOPLPUSH")


class _CheckedBRPOP:
    """Mixin for the channel's Redis client: vets every item a blocking pop hands to kombu."""

    def parse_response(self, connection: Any, command_name: str, **options: Any) -> Any:
        response = super().parse_response(  # type: ignore[misc]
            connection, command_name, **options
        )
        if command_name == "BRPOP" and isinstance(response, (list, tuple)):
            queue, item = response
            problem = check_message(item)
            if problem:
                return queue, quarantine(item, problem)
        elif command_name in _TAKING_COMMANDS and isinstance(response, (bytes, str)):
            problem = check_message(response)
            if problem:
                return quarantine(response, problem)
        return response


@functools.cache
def _checked(client_class: type) -> type:
    return type(f"Checked{client_class.__name__}", (_CheckedBRPOP, client_class), {})


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        taken_from = cast("Channel", self.channel).taking_now
        if taken_from is None:
            super().append(message, delivery_tag)
            return
        delivery = message.delivery_info
        record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.pipe_or_acquire() as pipe:
            # One MULTI: recorded as unacknowledged, and off the taking list (its newest item
            # is the message just moved there).
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, record)
            pipe.lpop(taken_from)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    # kombu's own attributes used here, which kombu-stubs do not declare
    connection_errors: tuple[type[BaseException], ...]
    _queue_cycle: Any
    _flush_brpop_reauth: Callable[[], None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token = uuid.uuid4().hex
        #: queue -> this channel's taking list for it
        self.taking_lists: dict[str, str] = {}
        #: the taking list of the message being handed to kombu right now, if any
        self.taking_now: str | None = None
        self._moving_from: str | None = None
        self._move_command = ""

    def _get_client(self) -> Any:
        client = super()._get_client()  # type: ignore[misc]
        if isinstance(client, functools.partial):  # kombu's global_keyprefix client
            return functools.partial(_checked(client.func), *client.args, **client.keywords)
        return _checked(client)

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if len(queues) != 1 or list(self.priority_steps) != [0] or self.global_keyprefix:
            # (several queues or priorities: BLMOVE takes one source; kombu's BRPOP it is)
            self._moving_from = None
            super()._brpop_start(timeout)  # type: ignore[misc]
            return
        source = queues[0]
        into = self.taking_lists.get(source) or self._start_taking(source)
        args = [source, into, "RIGHT", "LEFT"] if self._move_command == "BLMOVE" else [source, into]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self._moving_from = source
        wait = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command(self._move_command, *args, wait or 0)

    def _start_taking(self, source: str) -> str:
        with self.conn_or_acquire() as client:
            if not self._move_command:
                self._move_command = _blocking_move_command(client)
            into = contract.taking_key(source, self._token)
            taking.register(client, into)
        self.taking_lists[source] = into
        return into

    def _brpop_read(self, **options: Any) -> bool:
        source = self._moving_from
        if source is None:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        try:
            try:
                item = self.client.parse_response(
                    self.client.connection, self._move_command, **options
                )
            except self.connection_errors:
                # (as kombu: disconnect, so that the next poll reconnects)
                self.client.connection.disconnect()
                raise
            if item is None:
                raise Empty()
            self._queue_cycle.rotate(source)
            self.taking_now = self.taking_lists[source]
            try:
                self.connection._deliver(loads(bytes_to_str(item)), source)
            finally:
                self.taking_now = None
            return True
        finally:
            self._in_poll = None
            self._moving_from = None
            self._flush_brpop_reauth()

    def sweep_taking(self) -> int:
        """Refresh this channel's taking lists; put back what dead workers (or this one) left."""
        if not self.taking_lists:
            return 0
        mine = list(self.taking_lists.values())
        idle = [] if self._in_poll else mine
        with self.conn_or_acquire() as client:
            return taking.sweep(client, mine, idle, self.visibility_timeout)


def _blocking_move_command(client: Any) -> str:
    """BLMOVE where the server has it (Redis 6.2+), else BRPOPLPUSH, which it replaced."""
    try:
        version = str(client.info("server").get("redis_version", "0"))
    except ResponseError:  # INFO renamed away by a managed Redis: assume the old command
        return "BRPOPLPUSH"
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return "BLMOVE" if parts >= (6, 2) else "BRPOPLPUSH"


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller, whose restore sweep also sweeps the taking lists."""

    _channels: set[Any]  # (kombu's, undeclared in kombu-stubs)

    def maybe_restore_messages(self) -> None:
        super().maybe_restore_messages()
        for channel in self._channels:
            if not isinstance(channel, Channel):
                continue
            try:
                channel.sweep_taking()
            except channel.connection_errors:
                # (as kombu's sweep: the main loop reconnects; try again next tick)
                log.debug("taking-list sweep: connection error, next tick", exc_info=True)
                return


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()
