"""The SQLAlchemy integration on a real PostgreSQL and a real Redis: send_event_on_commit,
the outbox writer, and ``limechat-events outbox-relay`` run as processes (killed, several at
once, Redis taken away)."""

from __future__ import annotations

import collections
import gc
import logging
import re
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import redis
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, create_engine, insert
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from producer import Producer, ProducerSettings, ValidationError
from producer.sqlalchemy import (
    create_outbox_table,
    oncommit,
    outbox_table,
    send_event_on_commit,
    send_event_via_outbox,
)
from producer.sqlalchemy.relay import OutboxRelay
from tests.chaos.redis_server import RedisServer, free_port
from tests.helpers import ROOT, WorkerProcess, run_cli, wait_for, worker_env
from tests.integration.outbox_support import (
    TEST_DATABASE_URL,
    fill_outbox,
    outbox_rows,
    queued,
)
from worker.sandbox import Sandbox

pytestmark = pytest.mark.integration

PHONE = "+915673412780"
DB_PASSWORD = "db-secret-7f3a-never-log-me"
REDIS_PASSWORD = "redis-secret-91c2-never-log-me"


@pytest.fixture
def orders(engine: Engine) -> Table:
    """The business table the events go with."""
    table = Table(
        "orders", MetaData(), Column("id", Integer, primary_key=True), Column("ref", Text)
    )
    table.create(engine)
    return table


def order_refs(engine: Engine, orders: Table) -> list[str]:
    with engine.connect() as conn:
        return [row.ref for row in conn.execute(sa_select(orders.c.ref).order_by(orders.c.id))]


def relay_process(env: dict[str, str], *args: str) -> WorkerProcess:
    relay = WorkerProcess(env, ["-m", "worker", "outbox-relay", *args]).start(wait_ready=False)
    wait_for(
        lambda: relay.saw("outbox relay started") or relay.proc.poll() is not None,  # type: ignore[union-attr]
        30,
        "the relay to start",
    )
    assert relay.saw("outbox relay started"), relay.text()
    return relay


def relay_env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = worker_env(redis_url, "http://127.0.0.1:9/unused", DATABASE_URL=database_url)
    env.update(LOG_LEVEL="INFO", **extra)
    return env


def relayed_count(relay: WorkerProcess) -> int:
    found = re.search(r"outbox relay stopped relayed=(\d+)", relay.text())
    assert found, relay.text()
    return int(found.group(1))


# --- send_event_on_commit ------------------------------------------------------------------


def test_on_commit_enqueues_after_the_commit_only(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    with Session(engine) as session:
        session.execute(insert(orders), {"ref": "A-1"})
        first = send_event_on_commit(session, "order_placed", phone=PHONE, producer=producer)
        with session.begin_nested():  # a released savepoint keeps its event
            kept = send_event_on_commit(session, "order_paid", phone=PHONE, producer=producer)
        with pytest.raises(RuntimeError), session.begin_nested():
            send_event_on_commit(session, "order_lost", phone=PHONE, producer=producer)
            raise RuntimeError("this savepoint rolls back")
        assert queued(r) == [], "nothing may be enqueued before the commit"
        session.commit()

    assert [(q.event_id, q.event["event"]) for q in queued(r)] == [
        (first, "order_placed"),
        (kept, "order_paid"),
    ]
    assert order_refs(engine, orders) == ["A-1"]


def test_on_commit_rollback_sends_nothing(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    with Session(engine) as session:
        session.execute(insert(orders), {"ref": "A-1"})
        send_event_on_commit(session, "order_placed", phone=PHONE, producer=producer)
        session.rollback()
        # The next transaction of the same session does not inherit the dropped event.
        session.commit()
    with Session(engine) as session:
        send_event_on_commit(session, "order_placed", phone=PHONE, producer=producer)
        # closed without a commit

    assert queued(r) == []
    assert order_refs(engine, orders) == []


@pytest.mark.parametrize(
    "mode", ["conditional_savepoint", "create_savepoint", "rollback_only", "control_fully"]
)
def test_on_commit_in_a_session_joined_into_an_outer_transaction_waits_for_that_one(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis, mode: str
) -> None:
    """``Session(bind=conn)`` inside ``conn.begin()`` (the usual test fixture): the session's
    commit is a savepoint's, or nothing, unless it controls the transaction fully."""
    own_commit = mode == "control_fully"
    with engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode=mode) as session:  # type: ignore[arg-type]
            session.execute(insert(orders), {"ref": "A-1"})
            lost = send_event_on_commit(session, "order_placed", phone=PHONE, producer=producer)
            session.commit()
        if not own_commit:
            assert queued(r) == [], "the data is not committed yet: nor is the event sent"
            outer.rollback()
        # The same connection, a second outer transaction, which commits.
        outer = conn.begin()
        conn.execute(insert(orders), {"ref": "A-2"})
        with Session(bind=conn, join_transaction_mode=mode) as session:  # type: ignore[arg-type]
            # (no SQL through the session this time: it never begins on the connection)
            sent = send_event_on_commit(session, "order_paid", phone=PHONE, producer=producer)
            session.commit()
        # (even "control_fully" controls only what the session began: it ran no SQL)
        assert [q.event_id for q in queued(r)] == ([lost] if own_commit else [])
        conn.execute(insert(orders), {"ref": "A-3"})
        outer.commit()

    if own_commit:
        assert [q.event_id for q in queued(r)] == [lost, sent]
        assert order_refs(engine, orders) == ["A-1", "A-2", "A-3"]
    else:
        assert [q.event_id for q in queued(r)] == [sent]
        assert order_refs(engine, orders) == ["A-2", "A-3"]


def test_on_commit_in_an_outer_two_phase_transaction_waits_for_it(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    """A two-phase transaction ends with ``commit_twophase``/``rollback_twophase``, not
    ``commit``/``rollback`` (found by review: the event was never sent, or sent later by the
    connection's next, unrelated commit)."""
    with engine.connect() as conn:
        xa = conn.begin_twophase()
        with Session(bind=conn) as session:
            session.execute(insert(orders), {"ref": "T-1"})
            send_event_on_commit(session, "order_lost", phone=PHONE, producer=producer)
            session.commit()
        xa.rollback()
        with conn.begin():  # (unrelated later work on the same connection)
            conn.execute(insert(orders), {"ref": "T-2"})
        assert queued(r) == []
        xa = conn.begin_twophase()
        with Session(bind=conn) as session:
            session.execute(insert(orders), {"ref": "T-3"})
            sent = send_event_on_commit(session, "order_placed", phone=PHONE, producer=producer)
            session.commit()
        xa.commit()  # (no prepare(): this PostgreSQL allows no prepared transactions)
    assert order_refs(engine, orders) == ["T-2", "T-3"]
    assert [q.event_id for q in queued(r)] == [sent]


def test_on_commit_on_an_autocommit_connection_sends_at_the_sessions_commit(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    """Each statement is committed as it runs: the outer "transaction" SQLAlchemy shows is
    bookkeeping, and its rollback must not drop the event of stored data (found by review)."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        outer = conn.begin()
        with Session(bind=conn) as session:
            session.execute(insert(orders), {"ref": "AC-1"})
            sent = send_event_on_commit(session, "order_placed", phone=PHONE, producer=producer)
            session.commit()
        outer.rollback()
    assert order_refs(engine, orders) == ["AC-1"]
    assert [q.event_id for q in queued(r)] == [sent]


def test_a_connection_forgotten_with_events_waiting_on_it_is_still_freed(
    engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    """Nothing of ours keeps a Connection (and so its pooled database connection) alive: one
    dropped without close() in its outer transaction is collected, rolled back, and its
    event never sent (found by review: the waits held the Connection they were keyed on)."""

    def leave_one() -> weakref.ref[Connection]:
        conn = engine.connect()
        conn.begin()
        session = Session(bind=conn)
        session.execute(insert(orders), {"ref": "L-1"})
        send_event_on_commit(session, "order_placed", phone=PHONE, producer=producer)
        session.commit()
        session.close()
        return weakref.ref(conn)

    gc.collect()
    before = engine.pool.checkedout()  # type: ignore[attr-defined]
    forgotten = leave_one()
    gc.collect()
    assert forgotten() is None
    assert engine.pool.checkedout() == before  # type: ignore[attr-defined]
    assert queued(r) == []
    assert order_refs(engine, orders) == []


def test_a_savepoint_per_row_does_not_grow_what_the_session_keeps(
    engine: Engine, orders: Table
) -> None:
    with Session(engine) as session:
        for n in range(200):
            with session.begin_nested():
                session.execute(insert(orders), {"ref": f"N-{n}"})
        assert len(session.info.get(oncommit._CONNECTIONS, [])) == 1
        session.rollback()


def test_on_commit_honours_the_idempotency_key(
    engine: Engine, producer: Producer, r: redis.Redis
) -> None:
    for _ in range(2):
        with Session(engine) as session:
            send_event_on_commit(
                session, "order_placed", phone=PHONE, idempotency_key="order-1", producer=producer
            )
            session.commit()
    assert len(queued(r)) == 1


def test_on_commit_with_redis_down_commits_and_logs_the_event(
    engine: Engine, orders: Table, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a producer whose Redis refuses connections (a password in its URL)
    dead = Producer(
        ProducerSettings(redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0")
    )
    # When the transaction commits
    with caplog.at_level(logging.ERROR), Session(engine) as session:
        session.execute(insert(orders), {"ref": "A-1"})
        event_id = send_event_on_commit(session, "order_placed", phone=PHONE, producer=dead)
        session.commit()
    dead.close()
    # Then the data is committed, and the lost event is logged with its id, without a secret
    assert order_refs(engine, orders) == ["A-1"]
    assert event_id in caplog.text and "on-commit enqueue failed" in caplog.text
    assert REDIS_PASSWORD not in caplog.text


# --- the outbox writer ---------------------------------------------------------------------


def test_outbox_row_commits_and_rolls_back_with_the_data(
    engine: Engine, orders: Table, r: redis.Redis
) -> None:
    with Session(engine) as session:
        session.execute(insert(orders), {"ref": "A-1"})
        send_event_via_outbox(session, "order_placed", phone=PHONE)
        session.rollback()
    assert outbox_rows(engine) == 0

    with Session(engine) as session:
        session.execute(insert(orders), {"ref": "A-2"})
        event_id = send_event_via_outbox(
            session, "order_placed", phone=PHONE, data={"order_id": "A-2"}, account="acct-9"
        )
        with pytest.raises(RuntimeError), session.begin_nested():
            send_event_via_outbox(session, "order_lost", phone=PHONE)
            raise RuntimeError("this savepoint rolls back")
        session.commit()
    with engine.connect() as conn:
        rows = conn.execute(sa_select(outbox_table)).all()
    assert [(row.event_id, row.account) for row in rows] == [(event_id, "acct-9")]
    assert queued(r) == [], "the writer never touches Redis"


def test_the_row_goes_where_the_session_binds_the_outbox_table(tmp_path: Path) -> None:
    # A session whose default database is A but whose outbox table is mapped to B: the
    # writer asks the session for the outbox table's connection, as Session.execute would.
    a = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    b = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    for each in (a, b):
        create_outbox_table(each)
    with Session(bind=a, binds={outbox_table: b}) as session, session.begin():
        send_event_via_outbox(session, "order_placed", phone=PHONE)
    assert (outbox_rows(a), outbox_rows(b)) == (0, 1)
    a.dispose()
    b.dispose()


@pytest.mark.parametrize("write", [send_event_via_outbox, send_event_on_commit])
def test_bad_events_fail_at_call_time(
    write: object, engine: Engine, orders: Table, producer: Producer, r: redis.Redis
) -> None:
    extra = {"producer": producer} if write is send_event_on_commit else {}
    with Session(engine) as session:
        session.execute(insert(orders), {"ref": "A-1"})
        with pytest.raises(ValidationError) as caught:
            write(session, "order placed", phone=PHONE, **extra)  # type: ignore[operator]
        assert caught.value.field == "event"
        with pytest.raises(ValidationError) as caught:
            write(session, "order_placed", phone="98765", **extra)  # type: ignore[operator]
        assert caught.value.field == "phone"
        session.commit()  # the transaction itself is unharmed
    assert order_refs(engine, orders) == ["A-1"]
    assert outbox_rows(engine) == 0
    assert queued(r) == []


# --- the relay -----------------------------------------------------------------------------


def test_relay_delivers_outbox_events_through_a_worker(
    engine: Engine, database_url: str, redis_url: str, receiver: Sandbox
) -> None:
    with Session(engine) as session:
        ids = [
            send_event_via_outbox(session, "order_placed", phone=PHONE, data={"n": n})
            for n in range(5)
        ]
        session.commit()
    relay = relay_process(relay_env(redis_url, database_url), "--once")
    assert relay.wait_exit(30) == 0, relay.text()
    assert [q.event_id for q in queued(redis.Redis.from_url(redis_url))] == ids
    assert outbox_rows(engine) == 0

    worker = WorkerProcess(worker_env(redis_url, receiver.url)).start()
    try:
        wait_for(lambda: len(receiver.accepted()) == 5, 30, "five deliveries")
    finally:
        worker.stop()
    assert sorted(req.body["data"]["n"] for req in receiver.accepted()) == list(range(5))


def test_relay_killed_mid_run_loses_nothing(
    engine: Engine, database_url: str, redis_url: str, r: redis.Redis
) -> None:
    # Given 30,000 committed rows and a relay moving them 50 at a time
    ids = fill_outbox(engine, 30_000)
    env = relay_env(redis_url, database_url)
    relay = relay_process(env, "--batch-size", "50")
    # When it is SIGKILLed part-way
    wait_for(lambda: outbox_rows(engine) < 25_000, 30, "the relay to move some rows", 0.005)
    relay.kill()
    left = outbox_rows(engine)
    assert 0 < left < len(ids), "the kill must land mid-run"
    # Then a second relay finishes, and every event is on the queue; only the batch in
    # flight at the kill may be there twice, and then in messages marked redelivered
    second = relay_process(env, "--batch-size", "50", "--once")
    assert second.wait_exit(60) == 0, second.text()
    got = queued(r)
    assert {q.event_id for q in got} == set(ids)
    twice = [i for i, n in collections.Counter(q.event_id for q in got).items() if n > 1]
    assert len(twice) <= 50
    assert all(q.redelivered for q in got)
    assert outbox_rows(engine) == 0


def test_several_relays_move_each_row_once(
    engine: Engine, database_url: str, redis_url: str, r: redis.Redis
) -> None:
    # Given three relays polling an empty outbox
    env = relay_env(redis_url, database_url)
    relays = [relay_process(env, "--batch-size", "100") for _ in range(3)]
    try:
        # When 20,000 rows commit at once
        ids = fill_outbox(engine, 20_000)
        wait_for(lambda: outbox_rows(engine) == 0, 60, "the relays to drain the outbox")
        # Then each stops cleanly on SIGTERM, and each row went to the queue exactly once
        assert [relay.terminate(30) for relay in relays] == [0, 0, 0]
    finally:
        for relay in relays:
            relay.stop()
    counts = [relayed_count(relay) for relay in relays]
    assert sum(counts) == len(ids)
    assert sum(1 for c in counts if c > 0) >= 2, f"the relays did not share the work: {counts}"
    got = [q.event_id for q in queued(r)]
    assert sorted(got) == sorted(ids)
    assert len(set(got)) == len(got)


def test_relay_keeps_rows_while_redis_is_down(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    # Given committed rows, a relay with passwords in both URLs, and its Redis stopped
    server = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD).start()
    try:
        ids = fill_outbox(engine, 1_000)
        server.stop()
        secret_db_url = database_url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
        assert secret_db_url != database_url
        relay = relay_process(relay_env(server.url, secret_db_url), "--batch-size", "100")
        try:
            # When the relay fails to enqueue, it backs off and keeps every row
            wait_for(lambda: relay.text().count("relay step failed") >= 2, 30, "failed steps")
            assert relay.proc is not None and relay.proc.poll() is None, relay.text()
            assert outbox_rows(engine) == len(ids)
            # Then once Redis is back, every row goes, once
            server.start()
            wait_for(lambda: outbox_rows(engine) == 0, 60, "the relay to drain after recovery")
            assert relay.terminate(30) == 0
        finally:
            relay.stop()
        client = server.client()
        got = [q.event_id for q in queued(client)]
        client.close()
        assert got == ids
        output = relay.text()
        assert "relay recovered" in output
        assert REDIS_PASSWORD not in output and DB_PASSWORD not in output
    finally:
        server.close()


def test_relay_on_sqlite_one_relay(tmp_path: Path, producer: Producer, r: redis.Redis) -> None:
    # SQLite: no SKIP LOCKED (the documented single relay); the same table, writer and relay.
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    with Session(engine) as session:
        ids = [send_event_via_outbox(session, "order_placed", phone=PHONE) for _ in range(3)]
        session.commit()
    relay = OutboxRelay(engine, producer, batch_size=2)
    assert relay.run(lambda: False, once=True).relayed == 3
    assert [q.event_id for q in queued(r)] == ids
    engine.dispose()


def test_relay_leaves_a_row_that_is_not_an_event(
    engine: Engine, producer: Producer, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ids = fill_outbox(engine, 2)
    with engine.begin() as conn:
        conn.execute(insert(outbox_table), {"event_id": "hand-made", "payload": "not json"})
    ids += fill_outbox(engine, 1)
    relay = OutboxRelay(engine, producer)
    with caplog.at_level(logging.ERROR):
        assert relay.run(lambda: False, once=True).relayed == 3
        relay.run(lambda: False, once=True)  # (logged once, then skipped)
    assert [q.event_id for q in queued(r)] == ids
    assert outbox_rows(engine) == 1
    assert caplog.text.count("is not an event") == 1


def test_the_benchmark_runs(redis_url: str) -> None:
    # Small sizes, no timings judged: the harness itself still works.
    env = relay_env(redis_url, "unused")
    env.update(
        LIMECHAT_BENCH_REDIS_URL=redis_url,
        LIMECHAT_BENCH_DATABASE_URL=TEST_DATABASE_URL,
    )
    result = subprocess.run(
        [sys.executable, "-m", "bench.outbox_relay", "--rows", "2000", "--transactions", "50"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rows/s" in result.stdout and "outbox adds" in result.stdout


def test_relay_refuses_an_unusable_url_without_showing_its_password(redis_url: str) -> None:
    url = f"nosuchdb://app:{DB_PASSWORD}@127.0.0.1/shop"
    result = run_cli(relay_env(redis_url, url), "outbox-relay")
    assert result.returncode == 2, result.stderr
    assert "cannot use --database-url nosuchdb://app:***@127.0.0.1/shop" in result.stderr
    assert DB_PASSWORD not in result.stdout + result.stderr
