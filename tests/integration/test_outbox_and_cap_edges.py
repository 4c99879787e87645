"""Edges a hostile review of issues 11 and 13 found, each reproduced here before it was fixed:
poison outbox rows that killed the relays, a turned-away event lost to a reload, SQLAlchemy's
on_commit sending rolled-back events or raising out of commit(), the async producer refusing
a burst, a database password with an unencoded @ reaching the relay's logs."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
import redis
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert
from sqlalchemy.orm import Session

from producer import Producer, ProducerSettings, contract
from producer.envelope import new_event
from producer.sqlalchemy import outbox_table, send_event_on_commit
from producer.sqlalchemy.relay import OutboxRelay
from tests.helpers import run_cli
from tests.integration.outbox_support import (
    fill_outbox,
    outbox_rows,
    queued,
)

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


# -- Finding 1: a row whose JSON Python reads but the relay cannot write kills the relay --------


@pytest.mark.parametrize(
    "payload",
    [
        '{"id": "hand-made", "x": NaN}',  # json.loads accepts it; the relay's dumps refuses
        '{"id": "hand-made", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError
    ],
    ids=["nan", "deep"],
)
def test_relay_skips_a_row_it_cannot_encode_and_relays_the_rest(
    engine: Engine, producer: Producer, r: redis.Redis, payload: str
) -> None:
    ids = fill_outbox(engine, 2)
    with engine.begin() as conn:
        conn.execute(insert(outbox_table), {"event_id": "hand-made", "payload": payload})
    ids += fill_outbox(engine, 1)
    relay = OutboxRelay(engine, producer)
    # docs/outbox.md: "A row that is not an event ... never blocks the rows after it".
    # On main the step raises ValueError/RecursionError out of run(): the relay process dies,
    # and dies again on every restart, so nothing behind the row is ever relayed.
    assert relay.run(lambda: False, once=True).relayed == 3
    assert [q.event_id for q in queued(r)] == ids
    assert outbox_rows(engine) == 1


# -- Finding 2: an event turned away at its account's cap vanishes if a reload lands ----------


def _accounts_file(path: Path, ids: list[str]) -> None:
    path.write_text("".join(f'[[accounts]]\nid = "{i}"\ntoken = "tok-{i}"\n' for i in ids))


def test_a_turned_away_event_is_not_lost_when_its_account_is_removed_meanwhile(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    from worker.app import build_deliverer
    from worker.settings import Settings

    path = tmp_path / "accounts.toml"
    _accounts_file(path, ["a", "b"])
    env = {
        "LIMECHAT_ACCOUNTS_FILE": str(path),
        "REDIS_URL": redis_url,
        "LIMECHAT_API_URL": "http://127.0.0.1:9/",
        "LIMECHAT_ACCOUNT_CONCURRENCY": "1",
        "LIMECHAT_RATE_LIMIT": "off",
    }
    settings = Settings.from_env(env)
    deliverer = build_deliverer(settings, r)
    assert deliverer.load.claim("a")  # a has its one request out: it is at its cap
    _accounts_file(path, ["b"])  # the operator removes a, and sends SIGHUP
    new = settings.load_accounts(env)
    claim = deliverer.load.claim

    def claim_then_reload(account: str) -> bool:
        got = claim(account)
        deliverer.use_accounts(new, wait=0)  # the reload thread runs in this window
        return got

    deliverer.load.claim = claim_then_reload  # type: ignore[method-assign]
    event = new_event("order_placed", PHONE, PHONE.lstrip("+"), {}, "a")
    deliverer.deliver_batch([event], check_markers=False)
    # Issue 11: "a removed account's events are dead-lettered unknown_account; nothing in
    # flight is dropped". On main the event is neither parked, queued nor dead-lettered.
    parked = r.hlen(contract.RETRY_EVENTS)
    assert parked + r.llen(contract.QUEUE) + len(deliverer.dead_letters.list()) >= 1, r.keys()


# -- Finding 3: SQLAlchemy on_commit sends events the caller rolled back ----------------------


@pytest.fixture
def orders(engine: Engine) -> Table:
    table = Table("orders", MetaData(), Column("id", Integer, primary_key=True))
    table.create(engine)
    return table


def test_on_commit_event_sent_before_any_sql_is_dropped_by_rollback(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    with Session(engine) as session:
        send_event_on_commit(session, "rolled_back", phone=PHONE, producer=producer)
        session.rollback()  # the order failed before any SQL ran
        session.execute(insert(orders))  # the same session, later, for something else
        session.commit()
    assert [q.event["event"] for q in queued(r)] == []  # main: ['rolled_back']


def test_on_commit_event_sent_before_any_sql_is_dropped_by_close(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    session = Session(engine)
    send_event_on_commit(session, "closed", phone=PHONE, producer=producer)
    session.close()  # a Session may be reused after close()
    session.execute(insert(orders))
    session.commit()
    session.close()
    assert [q.event["event"] for q in queued(r)] == []  # main: ['closed']


# -- Finding 4: SQLAlchemy on_commit raises out of commit() and drops the other events --------


def test_on_commit_with_an_unusable_redis_url_fails_the_call_not_the_commit(
    engine: Engine, orders: Table, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import producer.api

    monkeypatch.setattr(producer.api, "_default", None)
    monkeypatch.setenv("REDIS_URL", "redis://:pa#ss@127.0.0.1:6379/0")  # '#' not encoded
    with Session(engine) as session:
        session.execute(insert(orders))
        # Django's send_event_on_commit raises ConfigError here, at call time (it builds the
        # producer first); SQLAlchemy's returns an id, then its commit() raises ConfigError
        # although the order IS committed, and the other pending events are discarded.
        with pytest.raises(Exception, match="REDIS_URL"):
            send_event_on_commit(session, "order_placed", phone=PHONE)
        with caplog.at_level(logging.ERROR):
            # (its docstring: "Redis failing at commit time does not make commit() raise")
            session.commit()


# -- Finding 5: producer.aio refuses the 101st concurrent send on a loop ----------------------


def test_async_producer_takes_more_than_100_concurrent_sends(
    redis_url: str, r: redis.Redis
) -> None:
    from producer.aio import AsyncProducer

    p = AsyncProducer(ProducerSettings(redis_url=redis_url, enqueue_timeout=2.0))

    async def burst() -> list[object]:
        sends = (p.send_event("order_placed", phone=PHONE) for _ in range(200))
        return await asyncio.gather(*sends, return_exceptions=True)

    results = asyncio.run(burst())
    failed = [repr(x) for x in results if isinstance(x, BaseException)]
    # main (redis-py 8.1: asyncio ConnectionPool max_connections defaults to 100 and raises at
    # once): 100 EnqueueError('... MaxConnectionsError: Too many connections') with Redis fine.
    assert failed == [], f"{len(failed)} failed, e.g. {failed[:1]}"
    assert r.llen(contract.QUEUE) == 200


# -- Finding 6: an unencoded @ in the database password reached the relay's logs -------------


def test_a_database_url_with_an_unencoded_at_is_refused_without_showing_the_password(
    redis_url: str,
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": "postgresql://postgres:S3cr@tDB@127.0.0.1/x",
    }
    result = run_cli(env, "outbox-relay", "--once")
    assert result.returncode == 2
    assert "percent-encoded" in result.stderr
    assert "tDB" not in result.stdout + result.stderr
