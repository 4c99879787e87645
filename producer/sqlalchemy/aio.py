"""The SQLAlchemy integration for ``AsyncSession`` (FastAPI, Starlette, ...).

- :func:`send_event_via_outbox` (a coroutine): the outbox row, written in the session's
  transaction with ``await session.execute``; the relay is the same.
- :func:`send_event_on_commit`: validates now; when the session commits, a task on the
  committing event loop enqueues the events with ``producer.aio`` (the sync producer there
  would block the loop for up to the enqueue timeout). The commit does not wait for it: the
  response may leave before the event is on the queue, and Redis down then loses it (logged
  at ERROR), as with the sync ``send_event_on_commit``. :func:`wait_for_sends` awaits the
  tasks still running (call it as the app shuts down).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

from ..aio import AsyncProducer
from ..outbox import outbox_envelope
from .oncommit import hold_until_commit, log_lost
from .writer import BIND, INSERT_ROW, outbox_row

if TYPE_CHECKING:
    from .oncommit import _Pending

# Tasks sending committed events: referenced until done (the loop holds tasks weakly).
_SENDING: set[asyncio.Task[None]] = set()


async def send_event_via_outbox(
    session: AsyncSession | async_scoped_session[Any] | AsyncConnection,
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
) -> str:
    """``producer.sqlalchemy.send_event_via_outbox`` for an ``AsyncSession`` or
    ``AsyncConnection``: the row is INSERTed now, in its transaction; returns the event id."""
    envelope, text = outbox_envelope(
        event, phone=phone, distinct_id=distinct_id, data=data, account=account
    )
    row = outbox_row(envelope, text)
    if isinstance(session, AsyncConnection):
        await session.execute(INSERT_ROW, row)
        return envelope["id"]
    target = session() if isinstance(session, async_scoped_session) else session
    if target.sync_session.dispatch.do_orm_execute:
        await target.execute(INSERT_ROW, row)  # (see producer.sqlalchemy.writer.BIND)
    else:
        connection = await target.connection(**BIND)
        await connection.execute(INSERT_ROW, row)
    return envelope["id"]


def send_event_on_commit(
    session: AsyncSession,
    event: str,
    *,
    phone: str,
    distinct_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    account: str | None = None,
    idempotency_key: str | None = None,
    producer: AsyncProducer | None = None,
) -> str:
    """Enqueue the event once ``session`` commits, nothing if it rolls back; returns its id.

    Not a coroutine: nothing is awaited until the commit. Same arguments and validation as
    ``producer.aio.send_event``; ``producer``: default ``producer.aio``'s, from the
    environment. Savepoints behave as with the sync ``send_event_on_commit``.
    """
    if not isinstance(session, AsyncSession):
        raise TypeError(
            "producer.sqlalchemy.aio.send_event_on_commit takes an AsyncSession; "
            "for a Session use producer.sqlalchemy.send_event_on_commit"
        )
    return hold_until_commit(
        session.sync_session,
        event,
        phone,
        distinct_id,
        data,
        account,
        idempotency_key,
        producer,
        asynchronous=True,
    )


def send_soon(items: list[_Pending]) -> None:
    """From the commit hook (in the loop's thread, inside ``await session.commit()``): one
    task sends ``items`` in order."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # (committed outside any loop: nothing can await the send)
        for item in items:
            log_lost(item, RuntimeError("no running event loop at commit"))
        return
    task = loop.create_task(_send_all(items))
    _SENDING.add(task)
    task.add_done_callback(_SENDING.discard)


async def _send_all(items: list[_Pending]) -> None:
    for item in items:
        producer = item.producer
        assert isinstance(producer, AsyncProducer)
        try:
            await producer.enqueue_event(item.envelope, item.key)
        except Exception as exc:  # (one event's failure never costs those after it)
            log_lost(item, exc)


async def wait_for_sends() -> None:
    """Wait until the events this loop's sessions committed are enqueued (or logged lost)."""
    loop = asyncio.get_running_loop()
    mine = [task for task in _SENDING if task.get_loop() is loop]
    if mine:
        await asyncio.gather(*mine, return_exceptions=True)
