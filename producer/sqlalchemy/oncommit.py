"""``send_event_on_commit``: validate now, enqueue after the session's transaction commits.

The pending events live in ``session.info``, each with the (sub)transaction it was sent in. A
rolled-back savepoint drops the events sent inside it (and inside savepoints under it); the
outermost transaction ending without a commit (rollback, ``close()``) drops them all; its
commit sends them, in the order they were sent.

A session joined into a transaction its connection had already begun (``Session(bind=conn)``
inside ``conn.begin()``: the usual test fixture, or an app that runs its own transactions)
commits only a savepoint, or nothing: the data is not committed until that outer transaction
is. Its events wait on the connection: sent when the outer transaction commits (SQLAlchemy's
``commit`` event, just before the ``COMMIT`` goes out, after every statement of the
transaction), dropped if it rolls back.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from ..api import Producer, build_event, check_idempotency_key, default_producer
from ..envelope import Event
from ..errors import EnqueueError

if TYPE_CHECKING:
    from ..aio import AsyncProducer

log = logging.getLogger("limechat_events.sqlalchemy")

_PENDING = "limechat_events.pending"  # session.info key: list[_Pending]
_CONNECTIONS = "limechat_events.connections"  # session.info key: list[Connection]


@dataclass(frozen=True)
class _Pending:
    envelope: Event
    key: str | None
    producer: Producer | AsyncProducer
    #: the transaction it was sent in
    transaction: SessionTransaction | None
    #: sent by a task on the event loop that commits (producer.sqlalchemy.aio)
    asynchronous: bool = False


def send_event_on_commit(
    session: Session | scoped_session[Any],
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
    idempotency_key: str | None = None,
    producer: Producer | None = None,
) -> str:
    """Enqueue the event once ``session`` commits, nothing if it rolls back; returns its id.

    Same arguments as :func:`producer.send_event`, validated now: a bad event raises
    :class:`~producer.ValidationError` in the request, not in the commit. ``producer``: the
    one to send with (default: the process-wide one, from the environment).

    Redis failing at commit time does not make ``commit()`` raise (the data *is* committed):
    the event is logged at ERROR with its id and is not sent. The outbox
    (:func:`send_event_via_outbox`) is what survives that.
    """
    target = session() if isinstance(session, scoped_session) else session
    if not isinstance(target, Session):  # (an AsyncSession: its events need the async hook)
        raise TypeError(
            "send_event_on_commit takes a Session; for an AsyncSession use "
            "producer.sqlalchemy.aio.send_event_on_commit"
        )
    return hold_until_commit(
        target, event, phone, distinct_id, data, account, idempotency_key, producer
    )


def hold_until_commit(
    session: Session,
    event: str,
    phone: str,
    distinct_id: str | None,
    data: Mapping[str, Any] | None,
    account: str | None,
    idempotency_key: str | None,
    producer: Producer | AsyncProducer | None,
    asynchronous: bool = False,
) -> str:
    """Validate the event now and keep it in ``session`` until its transaction ends."""
    envelope = build_event(event, phone, distinct_id, data, account)
    key = check_idempotency_key(idempotency_key)
    # Now, not at commit: a producer that cannot be made (a bad REDIS_URL) fails the call.
    sender = producer or (_default_async() if asynchronous else default_producer())
    pending = session.info.setdefault(_PENDING, [])
    if session.get_transaction() is None:
        # Begun now, as session.add() would: the event belongs to this transaction, and a
        # rollback or close() before any SQL drops it instead of the next commit sending it.
        session.begin()
    current = session.get_nested_transaction() or session.get_transaction()
    assert current is not None
    pending.append(_Pending(envelope, key, sender, current, asynchronous))
    return envelope["id"]


def _after_begin(session: Session, transaction: SessionTransaction, conn: Connection) -> None:
    # The connections the session's transaction runs on: at its commit, one still in a
    # transaction was joined into an outer one, which has not committed yet.
    used = session.info.setdefault(_CONNECTIONS, [])
    if not any(c is conn for c in used):
        used.append(conn)


def _after_commit(session: Session) -> None:
    # Releasing a savepoint fires this too, while the savepoint is still the session's
    # nested transaction; only the outermost commit (no savepoint left) sends.
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if not pending or session.get_nested_transaction() is not None:
        return
    session.info[_PENDING] = []
    used = session.info.get(_CONNECTIONS, [])
    bound = session.bind if isinstance(session.bind, Connection) else None  # (no SQL ran yet)
    outer = {c for c in (*used, bound) if c is not None and _in_an_open_transaction(c)}
    if outer:
        # (their transaction is over: not kept, nor through it the session and connection)
        _wait_for_outer_commit(outer, [replace(p, transaction=None) for p in pending])
    else:
        _send_committed(pending)


def _in_an_open_transaction(conn: Connection) -> bool:
    """Whether ``conn``'s transaction is still to commit or roll back, after the session's.

    Not on an ``AUTOCOMMIT`` connection: each statement is committed as it runs, and the
    transaction SQLAlchemy still shows there is bookkeeping (its rollback undoes nothing).
    SQLAlchemy answers that from the execution options and the engine's ``isolation_level``
    (the method is private, in every 2.x release).
    """
    return conn.in_transaction() and not conn._is_autocommit_isolation()


def _send_committed(pending: list[_Pending]) -> None:
    """Enqueue committed events, in order (async ones from a task on the committing loop)."""
    later = [item for item in pending if item.asynchronous]
    for item in pending:
        if not item.asynchronous:
            _send(item)
    if later:
        from .aio import send_soon  # (only sessions that hold async events get here)

        send_soon(later)


@dataclass
class _Waiting:
    """Events whose session committed inside transactions its connections had begun."""

    #: how many of the connections are still to commit (none of them is referenced: a
    #: connection dropped in its transaction is freed, rolled back, and never counts down)
    uncommitted: int
    pending: list[_Pending]


#: Per connection, the events waiting on its transaction. Each connection gets one pair of
#: listeners at its first wait, never removed (removing a listener while SQLAlchemy runs them
#: is what it forbids), for at most a test's or a request's lifetime: a ``Connection`` is a
#: checkout, not the pooled connection.
_WAITS: weakref.WeakKeyDictionary[Connection, list[_Waiting]] = weakref.WeakKeyDictionary()


def _wait_for_outer_commit(connections: set[Connection], pending: list[_Pending]) -> None:
    """Send ``pending`` once every one of ``connections`` commits; drop them if any rolls back."""
    waiting = _Waiting(len(connections), pending)
    for conn in connections:
        waits = _WAITS.get(conn)
        if waits is None:
            waits = _WAITS[conn] = []
            sa_event.listen(conn, "commit", _outer_committed)
            sa_event.listen(conn, "rollback", _outer_rolled_back)
            sa_event.listen(conn, "commit_twophase", _outer_committed_2pc)
            sa_event.listen(conn, "rollback_twophase", _outer_rolled_back_2pc)
        waits.append(waiting)


def _outer_committed(conn: Connection) -> None:
    waits, _WAITS[conn] = _WAITS.get(conn, []), []
    for waiting in waits:
        waiting.uncommitted -= 1
        if not waiting.uncommitted and waiting.pending:
            pending, waiting.pending = waiting.pending, []
            _send_committed(pending)


def _outer_committed_2pc(conn: Connection, xid: Any, is_prepared: bool) -> None:
    _outer_committed(conn)


def _outer_rolled_back_2pc(conn: Connection, xid: Any, is_prepared: bool) -> None:
    _outer_rolled_back(conn)


def _outer_rolled_back(conn: Connection) -> None:
    waits, _WAITS[conn] = _WAITS.get(conn, []), []
    for waiting in waits:
        waiting.pending = []  # (and so for its other connections too)


def _after_soft_rollback(session: Session, rolled_back: SessionTransaction) -> None:
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if pending:
        pending[:] = [p for p in pending if not _within(p.transaction, rolled_back)]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost one ending: after a commit the list is already empty; otherwise it was
    # rolled back or closed, and what it held must not leak into the next transaction.
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_CONNECTIONS, None)
        if session.info.get(_PENDING):
            session.info[_PENDING] = []


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _send(item: _Pending) -> None:
    producer = item.producer
    assert isinstance(producer, Producer)
    try:
        producer.enqueue_event(item.envelope, item.key)
    except Exception as exc:  # (the data is committed: never raise out of commit(), and never
        # let one event's failure cost those after it)
        log_lost(item, exc)


def _default_async() -> AsyncProducer:
    from ..aio import default_producer as default_async_producer  # (async apps only)

    return default_async_producer()


def log_lost(item: _Pending, exc: Exception) -> None:
    # An EnqueueError's text is free of passwords (producer.api._enqueue_errors); of any other
    # error only its type is shown.
    why = str(exc) if isinstance(exc, EnqueueError) else type(exc).__name__
    log.error(
        "on-commit enqueue failed, event not sent evt=%s event=%s: %s",
        item.envelope["id"],
        item.envelope["event"],
        why,
    )


# The hooks listen on the Session class, once, when this module is imported (at the app's
# start, before threads serve requests): not on each session, which costs about 100 us a
# request (SQLAlchemy builds the instance's own dispatch), and not at the first event held,
# which would add to the class's listeners while another thread's commit may be running them
# (SQLAlchemy forbids that: the other commit raised "deque mutated during iteration"). A
# session holding no events pays, per transaction, a short list of its connections kept in
# ``session.info`` (after_begin) and a dict lookup at its commit and at its end.
sa_event.listen(Session, "after_begin", _after_begin)
sa_event.listen(Session, "after_commit", _after_commit)
sa_event.listen(Session, "after_soft_rollback", _after_soft_rollback)
sa_event.listen(Session, "after_transaction_end", _after_transaction_end)
