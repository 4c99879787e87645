"""A FastAPI shop on async SQLAlchemy (PostgreSQL) that tells LimeChat when an order is placed.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/shop REDIS_URL=redis://127.0.0.1:6379/0 \
        uvicorn --app-dir examples/fastapi_shop app:app
    DATABASE_URL=... REDIS_URL=... limechat-events outbox-relay   # the outbox -> Redis

``POST /orders`` with ``{"phone": "+915673412780", "total": "199.00"}`` writes the order and
its ``order_placed`` event in one transaction, with ``producer.sqlalchemy.aio`` (an
``AsyncSession``: the sync functions refuse one). ``"delivery"`` chooses how the event goes:

- ``"outbox"`` (the default): ``await send_event_via_outbox(session, ...)``, a
  ``limechat_outbox`` row of the same transaction moved to Redis by the relay. Redis down does
  not matter to the request, and nothing is lost.
- ``"on_commit"``: ``send_event_on_commit(session, ...)``; once the commit is done a task on
  the loop enqueues it with ``producer.aio`` (never the sync producer, which would block the
  loop). Redis down at that moment: the order is placed, the event logged at ERROR and lost.

``"decline": true`` makes the payment fail after the order and its event are written: the
transaction rolls back and nothing is sent, either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    Numeric,
    Table,
    Text,
    func,
    insert,
)
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from producer import ValidationError
from producer.sqlalchemy import define_outbox_table
from producer.sqlalchemy.aio import send_event_on_commit, send_event_via_outbox, wait_for_sends

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(message)s")

metadata = MetaData()
orders = Table(
    "shop_orders",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("phone", Text, nullable=False),
    Column("total", Numeric(12, 2), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
define_outbox_table(metadata)  # (create_all makes limechat_outbox too; or use your migrations)

engine = create_async_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield
    await wait_for_sends()  # (on-commit events still on their way to Redis)
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


class Order(BaseModel):
    phone: str
    total: Decimal
    delivery: Literal["outbox", "on_commit"] = "outbox"
    decline: bool = False


class PaymentDeclined(Exception):
    pass


@app.post("/orders", status_code=201)
async def place_order(order: Order) -> JSONResponse:
    data = {"total": str(order.total)}
    try:
        async with AsyncSession(engine) as session, session.begin():
            result = await session.execute(
                insert(orders).values(phone=order.phone, total=order.total).returning(orders.c.id)
            )
            order_id = result.scalar_one()
            data["order_id"] = str(order_id)
            if order.delivery == "outbox":
                event_id = await send_event_via_outbox(
                    session, "order_placed", phone=order.phone, data=data
                )
            else:
                event_id = send_event_on_commit(
                    session, "order_placed", phone=order.phone, data=data
                )
            if order.decline:
                raise PaymentDeclined  # rolls back the order and its event
    except ValidationError as exc:
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=400)
    except PaymentDeclined:
        return JSONResponse({"error": "payment declined"}, status_code=402)
    return JSONResponse({"order_id": order_id, "event_id": event_id}, status_code=201)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
