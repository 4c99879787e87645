"""What the example-shop tests share (Django, Flask, FastAPI): a shop served by a real server
process and called over plain HTTP, starting processes that are always stopped, counting what
LimeChat (the sandbox) accepted, filling the outbox faster than requests would, and the
scenarios every shop runs (Redis down at request time, relays SIGKILLed mid-run). (The
fixtures are in conftest.py.)
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg

from producer.outbox import outbox_envelope
from tests.chaos.redis_server import RedisServer
from tests.helpers import WorkerProcess, wait_for, worker_env
from worker.sandbox import Sandbox

P = TypeVar("P", bound=WorkerProcess)

PHONE = "+915673412780"
INSERT_OUTBOX_ROW = (
    "INSERT INTO limechat_outbox (event_id, account, payload, created_at) VALUES (%s, %s, %s, %s)"
)

DATABASE_URL = os.environ.get(
    "LIMECHAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A schema of this test's own; yields a database URL whose search path is it.

    Dropped afterwards with everything in it, so the database is left as it was found. A
    PostgreSQL that does not answer fails the test (never a skip: CI must not go green
    without it).
    """
    schema = f"lc_shop_test_{secrets.token_hex(4)}"
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in DATABASE_URL else "?"
    try:
        yield f"{DATABASE_URL}{separator}options={quote(f'-csearch_path={schema}', safe='')}"
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


class Database:
    """Reads and writes the shop's tables directly, as an operator's psql would."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])


class HttpShop(WorkerProcess):
    """A shop's server (``python ARGV``, given the port) ready once ``GET /health`` answers."""

    def __init__(self, env: dict[str, str], argv: list[str], port: int) -> None:
        self.port = port
        super().__init__(env, argv)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> HttpShop:
        super().start(wait_ready=False)
        try:
            wait_for(self._answers, 30, "the shop's server to answer")
        except AssertionError:
            self.kill()
            raise AssertionError("the shop did not start:\n" + self.text()) from None
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("the shop exited at start:\n" + self.text())
        try:
            return get_json(f"{self.url}/health")[0] == 200
        except OSError:
            return False

    def order(self, **body: Any) -> tuple[int, dict[str, Any]]:
        return post_json(f"{self.url}/orders", body)


class OutboxRelayProcess(WorkerProcess):
    """An outbox relay (``python ARGV``), ready once it says it started."""

    def start(self, wait_ready: bool = True) -> OutboxRelayProcess:
        super().start(wait_ready=False)
        if wait_ready:
            wait_for(lambda: self.saw("outbox relay started") or self._exited(), 30, "the relay")
            if self._exited():
                raise AssertionError("the relay exited at start:\n" + self.text())
        return self

    def _exited(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is not None


def start(processes: list[WorkerProcess], process: P) -> P:
    processes.append(process)
    process.start()
    return process


def delivered_orders(receiver: Sandbox) -> Counter[str]:
    """order_id -> how many times LimeChat (the sandbox) accepted its order_placed."""
    return Counter(r.body["data"]["order_id"] for r in receiver.accepted())


def outbox_row(phone: str, data: dict[str, Any]) -> tuple[str, None, str, datetime]:
    """An order_placed row as ``send_event_via_outbox`` writes it, for ``INSERT_OUTBOX_ROW``."""
    envelope, text = outbox_envelope("order_placed", phone=phone, data=data)
    created = datetime.fromtimestamp(envelope["created_at"], tz=timezone.utc)
    return envelope["id"], None, text, created


def insert_outbox_rows(database_url: str, phone: str, count: int) -> set[str]:
    """``count`` rows as ``send_event_via_outbox`` writes them (faster than as many requests);
    returns their order ids (``b0``, ``b1``, ...)."""
    rows = [outbox_row(phone, {"order_id": f"b{n}"}) for n in range(count)]
    with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.executemany(INSERT_OUTBOX_ROW, rows)
    return {f"b{n}" for n in range(count)}


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    return _call(request)


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    return _call(urllib.request.Request(url))


def _call(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def relays_killed_mid_run_lose_nothing(
    processes: list[WorkerProcess],
    relay: Callable[..., WorkerProcess],
    database: Database,
    receiver: Sandbox,
    expected: set[str],
    step: int,
) -> None:
    """Relays (``relay(*options)``) with small batches SIGKILLed mid-run twice, each after
    about ``step`` rows; then a new relay moves the rest, and every order of ``expected``
    reaches LimeChat, only a batch in flight at each kill (sent, its rows not deleted) twice.
    A worker must be delivering."""
    total, batch = len(expected), 20
    for kill in (1, 2):
        killed = start(processes, relay("--batch-size", str(batch)))
        left = total - kill * step
        wait_for(lambda: database.count("limechat_outbox") <= left, 30, "the relay under way")  # noqa: B023
        killed.kill()
        assert database.count("limechat_outbox") > 0, "the relay finished before it was killed"
    start(processes, relay("--batch-size", "500"))
    wait_for(lambda: database.count("limechat_outbox") == 0, 30, "the outbox emptied")
    wait_for(lambda: set(delivered_orders(receiver)) == expected, 60, "every event delivered")
    duplicates = sum(n - 1 for n in delivered_orders(receiver).values())
    assert duplicates <= 2 * batch


@dataclass(frozen=True)
class OutageLines:
    """What a shop and its relay log through a Redis outage (each stack in its own words)."""

    #: the shop, for an on-commit event it could not enqueue (``{event_id}`` is filled in)
    event_lost: str
    #: the relay, at each failed attempt
    step_failed: str
    #: the relay, once Redis answers again
    back: str


def redis_down_at_request_time_the_outbox_keeps_the_event(
    tmp_path: Path,
    processes: list[WorkerProcess],
    receiver: Sandbox,
    database: Database,
    shop_env: Callable[[str, str], dict[str, str]],
    make_shop: Callable[[dict[str, str]], HttpShop],
    make_relay: Callable[[dict[str, str]], WorkerProcess],
    orders_table: str,
    lines: OutageLines,
) -> tuple[HttpShop, WorkerProcess]:
    """A shop (``make_shop(env)``) and its relay (``make_relay(env)``), with the environment
    ``shop_env(redis_url, database_url)``, take an order each way while Redis is down: the
    outbox keeps its event until Redis is back, then it is delivered; the on-commit one is
    logged lost (the order committed all the same). Neither logs the Redis password; the
    relay logs the redacted URL. Returns the shop and the relay, stopped."""
    password = "s3cret-redis-password-never-logged"
    server = RedisServer(tmp_path / "redis", password=password).start()
    try:
        server.stop()
        env = shop_env(server.url, database.url)
        shop = start(processes, make_shop(env))
        relay = start(processes, make_relay(env))

        # When: orders are placed while Redis is down
        status, outboxed = shop.order(phone=PHONE, total="250", delivery="outbox")
        assert status == 201, (outboxed, shop.text())
        status, committed = shop.order(phone=PHONE, total="75", delivery="on_commit")
        assert status == 201, (committed, shop.text())

        # Then: the outbox holds its event; the relay keeps retrying and does not give up;
        # the on_commit event is reported lost (the order committed all the same)
        assert database.rows("SELECT event_id FROM limechat_outbox") == [(outboxed["event_id"],)]
        lost = lines.event_lost.format(event_id=committed["event_id"])
        wait_for(lambda: shop.saw(lost), 10, "the on_commit failure logged")
        wait_for(lambda: relay.text().count(lines.step_failed) >= 3, 20, "relay retries")
        assert relay.proc is not None and relay.proc.poll() is None, relay.text()

        # When: Redis comes back (empty: the lost event was never there), with a worker on it
        server.start()
        start(processes, WorkerProcess(worker_env(server.url, receiver.url)))

        # Then: the outbox's event is delivered; the on_commit one is not (documented)
        want = Counter([str(outboxed["order_id"])])
        wait_for(lambda: delivered_orders(receiver) == want, 30, "the outbox event delivered")
        wait_for(lambda: database.count("limechat_outbox") == 0, 10, "the outbox emptied")
        wait_for(lambda: relay.saw(lines.back), 10, f"the relay to say {lines.back!r}")
        assert database.count(orders_table) == 2
        for process in (shop, relay):
            assert password not in process.text()
        assert "***" in relay.text()  # the redacted URL, to show where it failed
    finally:
        for process in reversed(processes):  # (before their Redis goes: a quick shutdown)
            process.stop()
        server.close()
    return shop, relay
