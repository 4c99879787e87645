"""A Flask shop on SQLAlchemy (PostgreSQL) that tells LimeChat when an order is placed.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/shop REDIS_URL=redis://127.0.0.1:6379/0 \
        gunicorn --chdir examples/flask_shop --config gunicorn.conf.py app:app

``POST /orders`` with ``{"phone": "+915673412780", "total": "199.00"}`` places an order;
``"decline": true`` makes the payment fail after the order row is written, so the
transaction rolls back. The event is sent only once the order is committed: a rolled-back
order sends nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    Numeric,
    Table,
    Text,
    create_engine,
    func,
    insert,
)
from sqlalchemy.orm import Session

from producer import EnqueueError, ValidationError, send_event

log = logging.getLogger("flask_shop")

metadata = MetaData()
orders = Table(
    "shop_orders",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("phone", Text, nullable=False),
    Column("total", Numeric(12, 2), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
app = Flask(__name__)


class PaymentDeclined(Exception):
    pass


@app.post("/orders")
def place_order() -> tuple[Any, int]:
    body = request.get_json()
    try:
        with Session(engine) as session, session.begin():  # commits, or rolls back on raise
            order_id = session.execute(
                insert(orders)
                .values(phone=body["phone"], total=body["total"])
                .returning(orders.c.id)
            ).scalar_one()
            if body.get("decline"):
                raise PaymentDeclined
    except PaymentDeclined:
        return jsonify(error="payment declined"), 402
    # Committed: the order exists, so LimeChat may hear about it. The key makes a retry of
    # this step (after an EnqueueError that was a timeout) enqueue at most one event.
    try:
        event_id = send_event(
            "order_placed",
            phone=body["phone"],
            data={"order_id": str(order_id), "total": str(body["total"])},
            idempotency_key=f"order-{order_id}",
        )
    except (ValidationError, EnqueueError) as exc:
        log.error("order %s placed, event not sent: %s", order_id, exc)
        event_id = None
    return jsonify(order_id=order_id, event_id=event_id), 201
