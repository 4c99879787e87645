"""kombu's Redis transport, hardened against crashes, a full Redis, and what others push onto
our queue.

Messages are taken with BLMOVE into a taking list (see worker/taking.py) instead of with
BRPOP, so a worker killed between taking a message and recording it as unacknowledged loses
nothing.

Stock kombu dies on an item of the Redis list that is not JSON ("Unrecoverable error:
JSONDecodeError", the worker exits and the item is gone), and Celery drops, with a log line,
a message whose body it cannot decode or whose task it does not know. Here every item the
worker takes is checked first (worker/vetting.py); one that is not a ``limechat.deliver``
message we can read is swapped for a ``deliver`` message carrying it, so it lands in the DLQ as
``malformed`` with what arrived, and the worker goes on.

Celery's remote control (``celery inspect``) is not vetted that way: its items are not events.
They pass as they are, but only if kombu can read them (worker/pidbox.py), so that a hostile
item on a reply list or the pidbox channel cannot stop a worker either.

Stock kombu also dies when Redis is full ("Unrecoverable error: OutOfMemoryError"). Here a
refused write in the consumer's loop backs off and tries again on the next poll, never
blocking it for long (a SIGTERM must still stop the worker): a message taken but not recorded
stays in the taking list and is put back on the queue before the next take.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from queue import Empty
from typing import Any, cast

from kombu.serialization import register
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils import json as kombu_json
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import ResponseError

from producer import contract
from worker import coalesce, pidbox, taking
from worker.fullredis import FullRedisWait, is_full
from worker.intake import take
from worker.server import require_supported

log = logging.getLogger("limechat_events.worker")

#: Longest pause of the consumer's loop while Redis is full (it comes back to check for a stop).
FULL_REDIS_PAUSE_SECONDS = 1.0


def use_plain_json() -> None:
    """Decode task bodies as plain JSON in this process (the worker's), without kombu's hook.

    kombu's JSON decoder turns any object of the form ``{"__type__": ..., "__value__": ...}``
    into a Python value (a datetime, bytes, a Decimal) or raises for a type it does not know,
    and Celery then drops the message ("Can't decode message body"). An event's ``data`` is the
    user's JSON: it must reach LimeChat exactly as it was sent, whatever its keys.
    """
    register(
        "json",
        dumps,
        functools.partial(kombu_json.loads, object_hook=None),
        content_type="application/json",
        content_encoding="utf-8",
    )


class _CheckedBRPOP:
    """Mixin for the channel's Redis client: what kombu's own BRPOP takes goes through intake.

    (Only when the worker consumes several queues; with one, ``Channel._brpop_read`` takes
    each message with BLMOVE and does the same.)
    """

    def parse_response(self, connection: Any, command_name: str, **options: Any) -> Any:
        response = super().parse_response(  # type: ignore[misc]
            connection, command_name, **options
        )
        if command_name == "BRPOP" and isinstance(response, (list, tuple)):
            queue, item = response
            if pidbox.is_control_queue(queue):
                # (a remote-control reply: as it is, or dropped if kombu cannot read it)
                if pidbox.readable(item) is None:
                    pidbox.dropped(bytes_to_str(queue), item)
                    return None
                return response
            return queue, json.dumps(take(item, bytes_to_str(queue)))
        return response


@functools.cache
def _checked(client_class: type) -> type:
    return type(f"Checked{client_class.__name__}", (_CheckedBRPOP, client_class), {})


# KEYS[1]: the unacked index   KEYS[2]: the unacked hash   ARGV[1]: a delivery tag
# An acknowledgement as one script, not kombu's MULTI: a full Redis refuses every command of a
# MULTI, deletes included, but runs a script whose first write is a delete.
_FORGET = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
"""


# KEYS[1]: the unacked index   KEYS[2]: the unacked hash   KEYS[3..]: the queues to push to
# ARGV[1]: a delivery tag   ARGV[2..]: for each queue, 'L' (LPUSH) or 'R' (RPUSH), the message
# kombu's restore in a WATCH/MULTI, as one script: the deletes come first, so a full Redis runs
# it, and only the restorer whose HDEL removed the record pushes the message back.
_RESTORE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
for i = 3, #KEYS do
  local side, message = ARGV[2 * (i - 2)], ARGV[2 * (i - 2) + 1]
  if side == 'L' then redis.call('LPUSH', KEYS[i], message)
  else redis.call('RPUSH', KEYS[i], message) end
end
return 1
"""


# KEYS[1]: the unacked index  KEYS[2]: the unacked hash  KEYS[3]: the taking list  KEYS[4]: queue
# ARGV[1]: delivery tag  ARGV[2]: time  ARGV[3]: the unacked record  ARGV[4]: how many items
# the take moved into the taking list  ARGV[5..]: those to put back on the queue (RPUSH order)
# The ZADD is the first write: a full Redis refuses the call whole, and the items stay in the
# taking list (put back before the next take).
_RECORD = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('LTRIM', KEYS[3], tonumber(ARGV[4]), -1)
if #ARGV > 4 then redis.call('RPUSH', KEYS[4], unpack(ARGV, 5)) end
"""


class _Pushes:
    """Stands in for the pipeline of kombu's ``_do_restore_message``: notes what it pushes."""

    def __init__(self) -> None:
        self.pushes: list[tuple[str, str, str]] = []

    def lpush(self, queue: str, message: str) -> None:
        self.pushes.append((queue, "L", message))

    def rpush(self, queue: str, message: str) -> None:
        self.pushes.append((queue, "R", message))


def _restored(channel: Channel, record: bytes, pushes: _Pushes, leftmost: bool) -> None:
    """Note what kombu would push back for an unacked ``record``; never nothing.

    kombu logs and drops a message it cannot route back (an exchange it cannot look up), and
    an unreadable record would raise in the consumer's loop: either goes to our queue instead,
    as it is or as a stand-in for the DLQ.
    """
    try:
        message, exchange, routing_key = loads(bytes_to_str(record))
        channel._do_restore_message(message, exchange, routing_key, pushes, leftmost)
    except Exception:
        log.exception("an unacked record that cannot be restored as it is goes to the queue")
        message = take(record, contract.QUEUE)
    if not pushes.pushes:
        (pushes.lpush if leftmost else pushes.rpush)(contract.QUEUE, dumps(message))


def _connection_closed(channel: Any) -> bool:
    """Whether ``channel``'s connection is closed under it.

    kombu closes a connection's transport (its ``client`` set to None) while channels opened
    on it may still be closed, or rejected on, after: such a channel cannot reach Redis, and
    trying raised AttributeError deep in kombu. After a long Redis outage that escaped from
    Celery's reconnection (``on_connection_error_after_connected``) and the worker did not
    resume. The unacked records stay in Redis; the visibility timeout brings them back.
    """
    return getattr(channel.connection, "client", None) is None


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        if client is None and _connection_closed(self.channel):
            log.info("connection closed: unacked messages come back after the visibility timeout")
            if self._delivered is not None:
                self._delivered.clear()
            return
        super().restore_unacked(client)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        channel = cast("Channel", self.channel)
        if client is None and _connection_closed(channel):
            return  # (see _connection_closed: its record stays in Redis, and comes back)
        with channel.conn_or_acquire(client) as client:
            record = client.hget(self.unacked_key, tag)
            pushes = _Pushes()
            if record is not None:
                _restored(channel, record, pushes, leftmost)
            client.eval(
                _RESTORE,
                2 + len(pushes.pushes),
                self.unacked_index_key,
                self.unacked_key,
                *[queue for queue, _, _ in pushes.pushes],
                tag,
                *[part for _, side, text in pushes.pushes for part in (side, text)],
            )

    # The prefetch slot is freed even when Redis fails the ack or reject: the unacked record
    # then stays in Redis and the message comes back after the visibility timeout. Otherwise
    # every slot could be lost to a long outage, and a worker with none left stops polling,
    # never notices its dead connection, and stalls for good while its scheduler beats on.

    def ack(self, delivery_tag: str) -> None:
        try:
            self._forget(delivery_tag)
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._forget(delivery_tag)
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def _forget(self, delivery_tag: str) -> None:
        with cast("Channel", self.channel).conn_or_acquire() as client:
            client.eval(_FORGET, 2, self.unacked_index_key, self.unacked_key, delivery_tag)

    def append(self, message: Any, delivery_tag: str) -> None:
        channel = cast("Channel", self.channel)
        taken_from = channel.taking_now
        if taken_from is None:
            super().append(message, delivery_tag)
            return
        delivery = message.delivery_info
        record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        taken, put_back = channel.taken_now
        with channel.conn_or_acquire() as client:
            # One script: recorded as unacknowledged, off the taking list (its newest items
            # are the ones just moved there), what did not fit back on the queue.
            client.eval(
                _RECORD,
                4,
                self.unacked_index_key,
                self.unacked_key,
                taken_from,
                contract.taking_source(taken_from),
                delivery_tag,
                time.time(),
                record,
                taken,
                *put_back,
            )
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().restore_visible(*args, **kwargs)
        except ResponseError as exc:
            if not is_full(exc):
                raise
            # (what a dead worker held stays in the unacked hash until Redis has memory)
            log.debug("restoring unacknowledged messages waits for memory: %s", exc)


#: A take of one message, nothing put back.
_ALONE: tuple[int, list[bytes]] = (1, [])


class Channel(kombu_redis.Channel):
    QoS = QoS
    #: most events one delivery carries when waiting messages are coalesced (1: never);
    #: the worker sets it to LIMECHAT_BATCH_SIZE through its transport options
    coalesce_events = 1
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "coalesce_events")
    # kombu's own attributes used here, which kombu-stubs do not declare
    connection_errors: tuple[type[BaseException], ...]
    _queue_cycle: Any
    _flush_brpop_reauth: Callable[[], None]
    _q_for_pri: Callable[[str, int], str]
    _do_restore_message: Callable[..., None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token = uuid.uuid4().hex
        #: queue -> this channel's taking list for it
        self.taking_lists: dict[str, str] = {}
        #: the taking list of the message being handed to kombu right now, if any
        self.taking_now: str | None = None
        #: how many items the take in hand moved into that list, and those to put back
        self.taken_now = _ALONE
        self._moving_from: str | None = None
        #: taking lists that may hold a message taken but not recorded (Redis was full then,
        #: or a sweep found one beside a move in flight): put back before the next take
        self._leftovers: set[str] = set()
        self._full = FullRedisWait("take messages", max_delay=FULL_REDIS_PAUSE_SECONDS)

    def _get_client(self) -> Any:
        client = super()._get_client()  # type: ignore[misc]
        if isinstance(client, functools.partial):  # kombu's global_keyprefix client
            return functools.partial(_checked(client.func), *client.args, **client.keywords)
        return _checked(client)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        while True:
            try:
                super()._queue_bind(exchange, routing_key, pattern, queue)  # type: ignore[misc]
                return
            except ResponseError as exc:
                if not is_full(exc):
                    raise
                if self._bound(exchange, routing_key, pattern, queue):
                    return  # (the usual case: any earlier worker declared it)
                if _stop_requested():
                    raise
                self._full.sleep(exc)

    def _size(self, queue: str) -> int:
        # (kombu counts in a MULTI, which a full Redis refuses even for reads)
        with self.conn_or_acquire() as client:
            lengths = [client.llen(self._q_for_pri(queue, p)) for p in self.priority_steps]
        return sum(int(n) for n in lengths)

    def _bound(self, exchange: str, routing_key: str, pattern: str, queue: str) -> bool:
        member = self.sep.join([routing_key or "", pattern or "", queue or ""])
        with self.conn_or_acquire() as client:
            return bool(client.sismember(self.keyprefix_queue % (exchange,), member))

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if (
            len(queues) != 1
            or list(self.priority_steps) != [0]
            or self.global_keyprefix
            or pidbox.is_control_queue(queues[0])
        ):
            # (several queues or priorities: BLMOVE takes one source; kombu's BRPOP it is. A
            # remote-control reply needs no taking list: it is not acknowledged anyway.)
            self._moving_from = None
            super()._brpop_start(timeout)  # type: ignore[misc]
            return
        source = queues[0]
        try:
            into = self.taking_lists.get(source) or self._start_taking(source)
            if into in self._leftovers:
                self._put_back(into)
        except ResponseError as exc:
            if not is_full(exc):
                raise
            self._full.sleep(exc)
            return  # (nothing sent: the next poll tries again)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self._moving_from = source
        wait = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command("BLMOVE", source, into, "RIGHT", "LEFT", wait or 0)

    def _start_taking(self, source: str) -> str:
        with self.conn_or_acquire() as client:
            require_supported(client)  # (a backstop: `worker` checks before it starts)
            into = contract.taking_key(source, self._token)
            taking.register(client, into)
        self.taking_lists[source] = into
        return into

    def _put_back(self, into: str) -> None:
        """Return what a take left in ``into`` to its queue (raises while Redis is full)."""
        with self.conn_or_acquire() as client:
            count = taking.recover(client, into, forget=False)
        if count:
            log.warning("put back on the queue %d message(s) left in %s by a take", count, into)
        self._leftovers.discard(into)

    def _brpop_read(self, **options: Any) -> bool:
        source = self._moving_from
        if source is None:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                # (as kombu: disconnect, so that the next poll reconnects)
                self.client.connection.disconnect()
                raise
            except ResponseError as exc:
                if not is_full(exc):
                    raise
                self._full.sleep(exc)
                raise Empty() from None
            if item is None:
                raise Empty()
            self._full.done()
            self._queue_cycle.rotate(source)
            into = self.taking_lists[source]
            self.taking_now = into
            try:
                message, self.taken_now = self._coalesced(item, source, into)
                self.connection._deliver(message, source)
            except ResponseError as exc:
                if not is_full(exc):
                    raise
                # Taken but not recorded: it stays in the taking list until put back.
                self._leftovers.add(into)
                self._full.sleep(exc)
                raise Empty() from None
            finally:
                self.taking_now = None
                self.taken_now = _ALONE
            return True
        finally:
            self._in_poll = None
            self._moving_from = None
            self._flush_brpop_reauth()

    def _coalesced(
        self, item: bytes, source: str, into: str
    ) -> tuple[dict[str, Any], tuple[int, list[bytes]]]:
        """The message to deliver for ``item``, carrying the events of messages waiting
        behind it (worker/coalesce.py); and how many items the taking list got, and which of
        them go back to the queue."""
        first = take(item, source)
        carried = coalesce.events_of(first)
        room = min(self.coalesce_events - len(carried or ()), coalesce.MAX_MOVED)
        if carried is None or room < 1:
            return first, _ALONE
        # The share's divisor is the threads (one prefetch slot each), not the slots free now:
        # with every thread busy, "free" is 1, and the next thread to finish would take a
        # whole batch to POST one by one while the others, finishing soon after, found none.
        threads = self.qos.prefetch_count or self.qos.can_consume_max_estimate() or 1
        try:
            with self.conn_or_acquire() as client:
                items = client.eval(coalesce.MOVE_MORE, 2, source, into, room, max(1, threads))
        except ResponseError as exc:
            if not is_full(exc):
                # (a script error of ours must not stop the consumer: what it may have moved
                # stays in the taking list, which the sweep puts back)
                log.error("could not move waiting messages to coalesce: %s", exc)
            return first, _ALONE  # (deliver this one alone)
        if not items:
            return first, _ALONE
        more = [(raw, take(raw, source)) for raw in reversed(items)]
        try:
            merged = coalesce.merge(first, more, self.coalesce_events, source)
        except Exception:  # (a bug of ours: deliver the first alone, the others go back)
            log.exception("could not coalesce; the messages moved go back to the queue")
            merged = coalesce.Merged(first, list(items))
        log.debug(
            "coalesced: %d message(s) taken as one delivery, %d put back",
            1 + len(items) - len(merged.put_back),
            len(merged.put_back),
        )
        return merged.message, (1 + len(items), merged.put_back)

    def _receive_one(self, c: Any) -> Any:
        # A broadcast on the pidbox channel that kombu cannot read would raise here (kombu
        # catches only ValueError and TypeError from its decoder) and stop the worker.
        try:
            return super()._receive_one(c)  # type: ignore[misc]
        except Empty:
            raise
        except self.connection_errors:
            raise
        except Exception as exc:
            log.warning("dropped a broadcast kombu cannot read (%s: %s)", type(exc).__name__, exc)
            return False

    def _deliver_fanout_message(self, message: Any, exchange: str) -> bool:
        reason = pidbox.problem(message)
        if reason is None and pidbox.is_control_queue(exchange):
            reason = pidbox.command_problem(message)
        if reason is not None:
            pidbox.dropped(f"the {exchange} exchange ({reason})", message)
            return False
        return bool(super()._deliver_fanout_message(message, exchange))  # type: ignore[misc]

    def sweep_taking(self) -> int:
        """Refresh this channel's taking lists; put back what dead workers (or this one) left."""
        if not self.taking_lists:
            return 0
        mine = list(self.taking_lists.values())
        idle = [] if self._in_poll else mine
        with self.conn_or_acquire() as client:
            swept = taking.sweep(client, mine, idle, self.visibility_timeout)
        # An idle worker is nearly always in its blocking pop when the sweep's timer fires: what
        # its own list holds then goes back before its next take (left alone at each sweep, it
        # stayed there for as long as the worker idled).
        self._leftovers.update(swept.busy)
        return swept.moved


def _stop_requested() -> bool:
    """Whether the worker has been asked to stop (a signal arrived during a wait)."""
    from celery.worker import state

    return bool(state.should_stop or state.should_terminate)


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
            except ResponseError as exc:
                if not is_full(exc):
                    raise
                log.debug("taking-list sweep waits for memory: %s", exc)
                return


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()
