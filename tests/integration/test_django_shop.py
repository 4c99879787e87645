"""The example Django shop (examples/django_shop) as a real app: ``manage.py runserver`` on
PostgreSQL, called over HTTP, its outbox relay and a worker running as real processes, the
sandbox as LimeChat.

Commit delivers; rollback sends nothing; Redis down at request time keeps the event in the
outbox until Redis is back; a relay SIGKILLed mid-run loses nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis

from producer import contract
from tests.helpers import WorkerProcess, wait_for, worker_env
from tests.integration.django_shop_support import (
    RelayProcess,
    ShopDatabase,
    ShopServer,
    shop_env,
)
from tests.integration.shop_processes import (
    PHONE,
    OutageLines,
    delivered_orders,
    insert_outbox_rows,
    redis_down_at_request_time_the_outbox_keeps_the_event,
    relays_killed_mid_run_lose_nothing,
    start,
)
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration


def test_an_order_that_commits_is_delivered_by_the_outbox_and_by_on_commit(
    redis_url: str, receiver: Sandbox, django_shop_db: ShopDatabase, processes: list[WorkerProcess]
) -> None:
    env = shop_env(redis_url, django_shop_db.url)
    shop = start(processes, ShopServer(env))
    start(processes, RelayProcess(env))
    start(processes, WorkerProcess(worker_env(redis_url, receiver.url)))

    # When: one order with each way of sending
    status, outboxed = shop.order(phone=PHONE, total="499.00", delivery="outbox")
    assert status == 201, outboxed
    status, committed = shop.order(phone=PHONE, total="99.50", delivery="on_commit")
    assert status == 201, committed

    # Then: LimeChat gets both, once, with the order's data
    wait_for(lambda: len(receiver.accepted()) == 2, 30, "both events delivered")
    bodies = {r.body["data"]["order_id"]: r.body for r in receiver.accepted()}
    assert bodies[str(outboxed["order_id"])] == {
        "distinct_id": PHONE,
        "phone": PHONE,
        "event": "order_placed",
        "data": {"order_id": str(outboxed["order_id"]), "total": "499.00", "currency": "INR"},
    }
    assert bodies[str(committed["order_id"])]["data"]["total"] == "99.50"
    assert django_shop_db.count("limechat_outbox") == 0
    assert django_shop_db.count("shop_order") == 2


def test_a_declined_payment_rolls_back_and_sends_nothing(
    redis_url: str, receiver: Sandbox, django_shop_db: ShopDatabase, processes: list[WorkerProcess]
) -> None:
    env = shop_env(redis_url, django_shop_db.url)
    shop = start(processes, ShopServer(env))
    start(processes, RelayProcess(env))
    worker = start(processes, WorkerProcess(worker_env(redis_url, receiver.url)))

    # When: the payment fails after the order and its event were written (both ways), and an
    # event that does not validate is refused at call time (the request fails, nothing written)
    for delivery in ("outbox", "on_commit"):
        status, body = shop.order(phone=PHONE, total="10", delivery=delivery, card="declined")
        assert (status, body) == (402, {"error": "payment declined"})
        status, body = shop.order(phone="5673412780", total="10", delivery=delivery)
        assert status == 400 and body["field"] == "phone", body
    assert django_shop_db.count("shop_order") == 0
    assert django_shop_db.count("limechat_outbox") == 0

    # Then: orders placed after them are delivered, and nothing else ever is
    good = [shop.order(phone=PHONE, total="20", delivery=d)[1] for d in ("outbox", "on_commit")]
    expected = Counter(str(g["order_id"]) for g in good)
    wait_for(lambda: delivered_orders(receiver) == expected, 30, "the good orders delivered")
    r = redis.Redis.from_url(redis_url)
    wait_for(lambda: r.llen(contract.QUEUE) == 0, 10, "the queue drained")
    r.close()
    assert delivered_orders(receiver) == expected, worker.text()


def test_redis_down_at_request_time_the_outbox_keeps_the_event_until_it_is_back(
    tmp_path: Path,
    receiver: Sandbox,
    django_shop_db: ShopDatabase,
    processes: list[WorkerProcess],
) -> None:
    shop, _ = redis_down_at_request_time_the_outbox_keeps_the_event(
        tmp_path,
        processes,
        receiver,
        django_shop_db,
        shop_env,
        ShopServer,
        RelayProcess,
        orders_table="shop_order",
        lines=OutageLines(
            event_lost="event lost",
            step_failed="relay step failed, rows kept",
            back="relay resumed",
        ),
    )
    assert "***" in shop.text()  # Django's shop logs the redacted URL too


def test_a_relay_sigkilled_mid_run_loses_nothing(
    redis_url: str, receiver: Sandbox, django_shop_db: ShopDatabase, processes: list[WorkerProcess]
) -> None:
    env = shop_env(redis_url, django_shop_db.url)
    shop = start(processes, ShopServer(env))
    # Given: orders placed while no relay runs, and a backlog of 3,000 more outbox rows
    placed = [shop.order(phone=PHONE, total="5", delivery="outbox")[1] for _ in range(5)]
    expected = {str(p["order_id"]) for p in placed} | insert_outbox_rows(
        django_shop_db.url, PHONE, 3000
    )
    start(processes, WorkerProcess(worker_env(redis_url, receiver.url)))

    # When relays are SIGKILLed mid-run, then: nothing is lost
    relays_killed_mid_run_lose_nothing(
        processes, lambda *o: RelayProcess(env, *o), django_shop_db, receiver, expected, step=600
    )


def test_a_relay_killed_after_enqueueing_resends_and_the_worker_skips_the_duplicate(
    redis_url: str, receiver: Sandbox, django_shop_db: ShopDatabase, processes: list[WorkerProcess]
) -> None:
    env = shop_env(redis_url, django_shop_db.url)
    shop = start(processes, ShopServer(env))
    worker = start(processes, WorkerProcess(worker_env(redis_url, receiver.url)))
    status, order = shop.order(phone=PHONE, total="42", delivery="outbox")
    assert status == 201, order

    # When: the relay dies between its LPUSH and its database commit
    dying = RelayProcess(env, argv=["-m", "tests.integration.django_relay_dies"])
    processes.append(dying)
    dying.start(wait_ready=False)
    assert dying.wait_exit(30) == -9, dying.text()

    # Then: the event is delivered, its row is still there, and a new relay sends it again,
    # marked redelivered: the worker skips it for its delivered marker
    want = Counter([str(order["order_id"])])
    wait_for(lambda: delivered_orders(receiver) == want, 30, "the event delivered")
    assert django_shop_db.rows("SELECT event_id FROM limechat_outbox") == [(order["event_id"],)]
    start(processes, RelayProcess(env))
    wait_for(lambda: django_shop_db.count("limechat_outbox") == 0, 10, "the row relayed again")
    wait_for(lambda: worker.saw(f"skipped evt={order['event_id']}"), 30, "the duplicate skipped")
    assert delivered_orders(receiver) == want
