"""``producer.sqlalchemy.aio`` on a real PostgreSQL (async SQLAlchemy, psycopg) and a real
Redis: the outbox row and the on-commit send from an ``AsyncSession``."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.event import listen
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from producer import ProducerSettings, ValidationError
from producer.aio import AsyncProducer
from producer.sqlalchemy import aio as sa_aio
from producer.sqlalchemy import send_event_on_commit, send_event_via_outbox
from producer.sqlalchemy.relay import engine_url
from tests.integration.outbox_support import outbox_rows, queued

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def test_the_outbox_row_commits_and_rolls_back_with_an_async_session(
    database_url: str, engine: Engine
) -> None:
    async def run() -> str:
        async_engine = create_async_engine(engine_url(database_url))
        try:
            with pytest.raises(RuntimeError):
                async with AsyncSession(async_engine) as session, session.begin():
                    await sa_aio.send_event_via_outbox(session, "order_lost", phone=PHONE)
                    raise RuntimeError("rolls back")
            async with AsyncSession(async_engine) as session, session.begin():
                with pytest.raises(ValidationError):
                    await sa_aio.send_event_via_outbox(session, "order_placed", phone="123")
                return await sa_aio.send_event_via_outbox(
                    session, "order_placed", phone=PHONE, data={"order_id": "7"}
                )
        finally:
            await async_engine.dispose()

    event_id = asyncio.run(run())
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, payload FROM limechat_outbox")).all()
    assert [row.event_id for row in rows] == [event_id]
    assert '"order_id":"7"' in rows[0].payload.replace(" ", "")


def test_the_async_outbox_takes_a_scoped_session_a_connection_and_follows_orm_hooks(
    database_url: str, engine: Engine
) -> None:
    # Three ways an async app holds its transaction: an async_scoped_session, an
    # AsyncConnection, and an AsyncSession whose do_orm_execute hook sees every statement.
    seen: list[str] = []

    async def run() -> list[str]:
        async_engine = create_async_engine(engine_url(database_url))
        scoped = async_scoped_session(async_sessionmaker(async_engine), asyncio.current_task)
        try:
            async with scoped.begin():
                first = await sa_aio.send_event_via_outbox(scoped, "order_placed", phone=PHONE)
            await scoped.remove()
            async with async_engine.begin() as connection:
                second = await sa_aio.send_event_via_outbox(connection, "paid", phone=PHONE)
            async with AsyncSession(async_engine) as session, session.begin():
                listen(session.sync_session, "do_orm_execute", lambda s: seen.append("hook"))
                third = await sa_aio.send_event_via_outbox(session, "shipped", phone=PHONE)
            return [first, second, third]
        finally:
            await async_engine.dispose()

    ids = asyncio.run(run())
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id FROM limechat_outbox ORDER BY id")).all()
    assert [row.event_id for row in rows] == ids
    assert seen == ["hook"]


def test_the_sync_functions_refuse_an_async_session_instead_of_writing_nothing(
    database_url: str, engine: Engine
) -> None:
    async def run() -> None:
        async_engine = create_async_engine(engine_url(database_url))
        try:
            async with AsyncSession(async_engine) as session, session.begin():
                with pytest.raises(TypeError, match=r"producer\.sqlalchemy\.aio"):
                    send_event_via_outbox(session, "order_placed", phone=PHONE)  # type: ignore[arg-type]
                with pytest.raises(TypeError, match=r"producer\.sqlalchemy\.aio"):
                    send_event_on_commit(session, "order_placed", phone=PHONE)  # type: ignore[arg-type]
        finally:
            await async_engine.dispose()

    asyncio.run(run())
    with Session(engine) as session, pytest.raises(TypeError, match="AsyncSession"):
        sa_aio.send_event_on_commit(session, "order_placed", phone=PHONE)  # type: ignore[arg-type]
    assert outbox_rows(engine) == 0


def test_on_commit_from_an_async_session_sends_with_the_async_producer_after_the_commit(
    database_url: str, engine: Engine, redis_url: str, r: redis.Redis
) -> None:
    producer = AsyncProducer(ProducerSettings(redis_url=redis_url))
    on_loop: list[bool] = []
    original = producer.enqueue_event

    async def enqueue_event(*args: object) -> str:
        on_loop.append(asyncio.get_running_loop() is not None)
        return await original(*args)  # type: ignore[arg-type]

    producer.enqueue_event = enqueue_event  # type: ignore[method-assign]

    async def run() -> tuple[str, str]:
        async_engine = create_async_engine(engine_url(database_url))
        try:
            with pytest.raises(RuntimeError):
                async with AsyncSession(async_engine) as session, session.begin():
                    sa_aio.send_event_on_commit(
                        session, "order_lost", phone=PHONE, producer=producer
                    )
                    raise RuntimeError("rolls back")
            async with AsyncSession(async_engine) as session:
                first = sa_aio.send_event_on_commit(
                    session, "order_placed", phone=PHONE, producer=producer
                )
                async with session.begin_nested():
                    kept = sa_aio.send_event_on_commit(
                        session, "order_paid", phone=PHONE, producer=producer
                    )
                with pytest.raises(ValidationError):
                    sa_aio.send_event_on_commit(session, "order_paid", phone="1", producer=producer)
                assert queued(r) == [], "nothing may be enqueued before the commit"
                await session.commit()
            await sa_aio.wait_for_sends()
            return first, kept
        finally:
            await async_engine.dispose()
            await producer.aclose()

    first, kept = asyncio.run(run())
    assert [(q.event_id, q.event["event"]) for q in queued(r)] == [
        (first, "order_placed"),
        (kept, "order_paid"),
    ]
    assert on_loop == [True, True]


def test_on_commit_from_an_async_session_joined_into_an_outer_transaction_waits_for_it(
    database_url: str, redis_url: str, r: redis.Redis
) -> None:
    producer = AsyncProducer(ProducerSettings(redis_url=redis_url))

    async def run() -> str:
        async_engine = create_async_engine(engine_url(database_url))
        try:
            async with async_engine.connect() as conn:
                outer = await conn.begin()
                async with AsyncSession(bind=conn) as session:
                    sa_aio.send_event_on_commit(
                        session, "order_lost", phone=PHONE, producer=producer
                    )
                    await session.commit()  # (a savepoint's release only)
                await sa_aio.wait_for_sends()
                assert queued(r) == []
                await outer.rollback()
                await sa_aio.wait_for_sends()
                assert queued(r) == []

                outer = await conn.begin()
                async with AsyncSession(bind=conn) as session:
                    sent = sa_aio.send_event_on_commit(
                        session, "order_placed", phone=PHONE, producer=producer
                    )
                    await session.commit()
                await sa_aio.wait_for_sends()
                assert queued(r) == []
                await outer.commit()
                await sa_aio.wait_for_sends()
            return sent
        finally:
            await async_engine.dispose()
            await producer.aclose()

    sent = asyncio.run(run())
    assert [q.event_id for q in queued(r)] == [sent]


def test_on_commit_from_an_async_session_with_redis_down_logs_the_lost_event(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    down = AsyncProducer(ProducerSettings(redis_url="redis://127.0.0.1:1/0", enqueue_timeout=0.5))

    async def run() -> str:
        async_engine = create_async_engine(engine_url(database_url))
        try:
            async with AsyncSession(async_engine) as session, session.begin():
                event_id = sa_aio.send_event_on_commit(
                    session, "order_placed", phone=PHONE, producer=down
                )
            await sa_aio.wait_for_sends()
            return event_id
        finally:
            await async_engine.dispose()

    with caplog.at_level(logging.ERROR, "limechat_events.sqlalchemy"):
        event_id = asyncio.run(run())
    assert f"event not sent evt={event_id}" in caplog.text
