"""The Flask and FastAPI example shops as real apps: gunicorn or uvicorn, PostgreSQL, HTTP calls,
and a real worker delivering ``order_placed`` to the sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos.redis_server import RedisServer
from tests.helpers import running_worker, wait_for
from tests.integration.shop_support import Schema, ShopServer
from tests.observe import queued_messages
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


@pytest.fixture(params=["flask", "fastapi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def schema() -> Iterator[Schema]:
    made = Schema()
    yield made
    made.drop()


def shop_env(env: dict[str, str], schema: Schema, **extra: str) -> dict[str, str]:
    return {
        **env,
        "DATABASE_URL": schema.sqlalchemy_url,
        "LIMECHAT_ENQUEUE_TIMEOUT_SECONDS": "0.5",
        **extra,
    }


def test_an_order_that_commits_is_delivered_and_one_rolled_back_sends_nothing(
    kind: str, schema: Schema, env: dict[str, str], receiver: Sandbox, r: redis.Redis
) -> None:
    shop = ShopServer(kind, shop_env(env, schema))
    try:
        # When one order is declined (rolled back) and two are placed
        declined = shop.post("/orders", {"phone": PHONE, "total": "5.00", "decline": True})
        placed = [shop.post("/orders", {"phone": PHONE, "total": f"{n}.50"}) for n in (1, 2)]
    finally:
        output = shop.stop()
    assert declined == (402, {"error": "payment declined"}), output
    assert [status for status, _ in placed] == [201, 201], output
    # Then the database has the two orders, and the queue their two events
    order_ids = [body["order_id"] for _, body in placed]
    assert [row[0] for row in schema.rows("SELECT id FROM shop_orders ORDER BY id")] == order_ids
    assert queued_messages(r) == 2
    # And a real worker delivers exactly those to LimeChat (the sandbox)
    with running_worker(env):
        wait_for(lambda: len(receiver.accepted()) >= 2, 30, "two deliveries")
        time.sleep(0.3)  # (a third, wrong, delivery would show up now)
    bodies = [request.body for request in receiver.accepted()]
    assert sorted((b["event"], b["data"]["order_id"]) for b in bodies) == [
        ("order_placed", str(order_id)) for order_id in order_ids
    ]
    assert {b["data"]["total"] for b in bodies} == {"1.50", "2.50"}


def test_redis_down_at_request_time_still_places_the_order_without_hanging(
    kind: str, schema: Schema, env: dict[str, str], tmp_path: Path
) -> None:
    # Given a shop whose Redis is down
    down = RedisServer(tmp_path / "redis")
    shop = ShopServer(kind, shop_env(env, schema, REDIS_URL=down.url))
    try:
        started = time.monotonic()
        status, body = shop.post("/orders", {"phone": PHONE, "total": "9.99"})
        elapsed = time.monotonic() - started
    finally:
        output = shop.stop()
    # Then the order is placed, the request says the event was not sent, and it did not hang
    assert status == 201 and body["event_id"] is None, output
    assert schema.rows("SELECT count(*) FROM shop_orders") == [(1,)]
    assert elapsed < 2, elapsed
    assert "event not sent" in output
