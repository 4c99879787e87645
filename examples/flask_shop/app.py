"""A Flask shop on SQLAlchemy (PostgreSQL) that tells LimeChat when an order is placed.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/shop REDIS_URL=redis://127.0.0.1:6379/0 \
        gunicorn --chdir examples/flask_shop --config gunicorn.conf.py app:app
    DATABASE_URL=... REDIS_URL=... limechat-events outbox-relay   # the outbox -> Redis

``POST /orders`` with ``{"phone": "+915673412780", "total": "199.00"}`` writes the order and
its ``order_placed`` event in one transaction. ``"delivery"`` chooses how the event goes:

- ``"outbox"`` (the default): a ``limechat_outbox`` row of the same transaction, moved to
  Redis by the relay. Redis down does not matter to the request, and nothing is lost.
- ``"on_commit"``: enqueued right after the commit by the session's hook. Redis down at
  that moment: the order is placed, the event is logged at ERROR and lost.

``"decline": true`` makes the payment fail after the order and its event are written: the
transaction rolls back and nothing is sent, either way.
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

from producer import ValidationError
from producer.sqlalchemy import define_outbox_table, send_event_on_commit, send_event_via_outbox

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

SENDERS = {"outbox": send_event_via_outbox, "on_commit": send_event_on_commit}

engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
app = Flask(__name__)


class PaymentDeclined(Exception):
    pass


@app.post("/orders")
def place_order() -> tuple[Any, int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("delivery", "outbox") not in SENDERS:
        return jsonify(error="bad request"), 400
    send = SENDERS[body.get("delivery", "outbox")]
    try:
        with Session(engine) as session, session.begin():  # commits, or rolls back on raise
            order_id = session.execute(
                insert(orders)
                .values(phone=body["phone"], total=body["total"])
                .returning(orders.c.id)
            ).scalar_one()
            event_id = send(
                session,
                "order_placed",
                phone=body["phone"],
                data={"order_id": str(order_id), "total": str(body["total"])},
            )
            if body.get("decline"):
                raise PaymentDeclined  # rolls back the order and its event
    except ValidationError as exc:
        return jsonify(error=str(exc), field=exc.field), 400
    except PaymentDeclined:
        return jsonify(error="payment declined"), 402
    return jsonify(order_id=order_id, event_id=event_id), 201


@app.get("/health")
def health() -> tuple[Any, int]:
    return jsonify(status="ok"), 200
