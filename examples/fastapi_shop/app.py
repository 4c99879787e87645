"""A FastAPI shop on async SQLAlchemy (PostgreSQL) that tells LimeChat when an order is placed.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/shop REDIS_URL=redis://127.0.0.1:6379/0 \
        uvicorn --app-dir examples/fastapi_shop app:app

``POST /orders`` with ``{"phone": "+915673412780", "total": "199.00"}`` places an order;
``"decline": true`` makes the payment fail after the order row is written, so the
transaction rolls back. The event is sent with ``producer.aio`` (a coroutine: the sync
``send_event`` would block the event loop while it waits for Redis), once the order is
committed: a rolled-back order sends nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

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

from producer import EnqueueError, ValidationError
from producer.aio import send_event

log = logging.getLogger("fastapi_shop")

metadata = MetaData()
orders = Table(
    "shop_orders",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("phone", Text, nullable=False),
    Column("total", Numeric(12, 2), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

engine = create_async_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


class Order(BaseModel):
    phone: str
    total: Decimal
    decline: bool = False


class PaymentDeclined(Exception):
    pass


@app.post("/orders", status_code=201)
async def place_order(order: Order) -> JSONResponse:
    try:
        async with AsyncSession(engine) as session, session.begin():
            result = await session.execute(
                insert(orders).values(phone=order.phone, total=order.total).returning(orders.c.id)
            )
            order_id = result.scalar_one()
            if order.decline:
                raise PaymentDeclined
    except PaymentDeclined:
        return JSONResponse({"error": "payment declined"}, status_code=402)
    # Committed: the order exists, so LimeChat may hear about it. The key makes a retry of
    # this step (after an EnqueueError that was a timeout) enqueue at most one event.
    try:
        event_id: str | None = await send_event(
            "order_placed",
            phone=order.phone,
            data={"order_id": str(order_id), "total": str(order.total)},
            idempotency_key=f"order-{order_id}",
        )
    except (ValidationError, EnqueueError) as exc:
        log.error("order %s placed, event not sent: %s", order_id, exc)
        event_id = None
    return JSONResponse({"order_id": order_id, "event_id": event_id}, status_code=201)
