"""The Flask and FastAPI example shops as real apps: gunicorn or uvicorn on PostgreSQL, called
over HTTP, ``limechat-events outbox-relay`` and a worker as real processes, the sandbox as
LimeChat.

Commit delivers (both ways of sending); rollback sends nothing; Redis down at request time
keeps the outbox's event until Redis is back (the on-commit one is logged lost); a relay
SIGKILLed mid-run loses nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import contract
from tests.helpers import WorkerProcess, wait_for, worker_env
from tests.integration.shop_processes import (
    PHONE,
    Database,
    OutageLines,
    delivered_orders,
    insert_outbox_rows,
    postgres_schema,
    redis_down_at_request_time_the_outbox_keeps_the_event,
    relays_killed_mid_run_lose_nothing,
    start,
)
from tests.integration.shop_support import RelayProcess, ShopServer, shop_env
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration


@pytest.fixture(params=["flask", "fastapi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db() -> Iterator[Database]:
    """A schema of the test's own; the shop creates its tables (and the outbox) at start."""
    with postgres_schema() as url:
        yield Database(url)


def test_orders_that_commit_are_delivered_both_ways_and_rolled_back_ones_send_nothing(
    kind: str,
    redis_url: str,
    receiver: Sandbox,
    db: Database,
    processes: list[WorkerProcess],
) -> None:
    env = shop_env(redis_url, db.url)
    shop = start(processes, ShopServer(kind, env))
    start(processes, RelayProcess(env))
    worker = start(processes, WorkerProcess(worker_env(redis_url, receiver.url)))

    # When: the payment fails after the order and its event were written (both ways), and an
    # event that does not validate is refused at call time (the request fails, nothing written)
    for delivery in ("outbox", "on_commit"):
        status, body = shop.order(phone=PHONE, total="10", delivery=delivery, decline=True)
        assert (status, body) == (402, {"error": "payment declined"}), shop.text()
        status, body = shop.order(phone="5673412780", total="10", delivery=delivery)
        assert status == 400 and body["field"] == "phone", body
    assert db.count("shop_orders") == 0
    assert db.count("limechat_outbox") == 0

    # And: one order placed each way
    placed = {}
    for delivery, total in (("outbox", "499.00"), ("on_commit", "99.50")):
        status, body = shop.order(phone=PHONE, total=total, delivery=delivery)
        assert status == 201, (body, shop.text())
        placed[delivery] = body

    # Then: LimeChat gets both, once, with the order's data, and nothing else ever
    expected = Counter(str(body["order_id"]) for body in placed.values())
    wait_for(lambda: delivered_orders(receiver) == expected, 30, "both events delivered")
    r = redis.Redis.from_url(redis_url)
    wait_for(lambda: r.llen(contract.QUEUE) == 0, 10, "the queue drained")
    r.close()
    assert delivered_orders(receiver) == expected, worker.text()
    bodies = {a.body["data"]["order_id"]: a.body for a in receiver.accepted()}
    outboxed = placed["outbox"]
    assert bodies[str(outboxed["order_id"])] == {
        "distinct_id": PHONE,
        "phone": PHONE,
        "event": "order_placed",
        "data": {"order_id": str(outboxed["order_id"]), "total": "499.00"},
    }
    assert bodies[str(placed["on_commit"]["order_id"])]["data"]["total"] == "99.50"
    wait_for(lambda: db.count("limechat_outbox") == 0, 10, "the outbox emptied")
    assert db.count("shop_orders") == 2


def test_redis_down_at_request_time_the_outbox_keeps_the_event_until_it_is_back(
    kind: str, tmp_path: Path, receiver: Sandbox, db: Database, processes: list[WorkerProcess]
) -> None:
    redis_down_at_request_time_the_outbox_keeps_the_event(
        tmp_path,
        processes,
        receiver,
        db,
        shop_env,
        lambda env: ShopServer(kind, env),
        RelayProcess,
        orders_table="shop_orders",
        lines=OutageLines(
            event_lost="event not sent evt={event_id}",
            step_failed="relay step failed",
            back="relay recovered",
        ),
    )


def test_a_relay_sigkilled_mid_run_loses_nothing(
    kind: str,
    redis_url: str,
    receiver: Sandbox,
    db: Database,
    processes: list[WorkerProcess],
) -> None:
    env = shop_env(redis_url, db.url)
    shop = start(processes, ShopServer(kind, env))
    # Given: orders placed while no relay runs, and a backlog of 5,000 more outbox rows (a
    # relay moves a few thousand a second: enough that each is killed with rows left)
    placed = [shop.order(phone=PHONE, total="5", delivery="outbox") for _ in range(5)]
    assert [status for status, _ in placed] == [201] * 5, shop.text()
    expected = {str(body["order_id"]) for _, body in placed}
    expected |= insert_outbox_rows(db.url, PHONE, 5000)
    start(processes, WorkerProcess(worker_env(redis_url, receiver.url)))

    # When relays are SIGKILLed mid-run, then: nothing is lost
    relays_killed_mid_run_lose_nothing(
        processes, lambda *o: RelayProcess(env, *o), db, receiver, expected, step=300
    )
