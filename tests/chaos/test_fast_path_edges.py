"""Edges of the producer's fast path, found by a hostile review (each failed before its fix).

Real Redis, real SQLAlchemy sessions, real threads and forks. The class-level on-commit hooks
must not break another thread's commit; the outbox INSERT must follow the session's own
statement routing; a sync send must give up within about twice the enqueue timeout on a slow
network; a forked child's threads must never use the parent's sockets.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest
import redis

from producer import EnqueueError, Producer, ProducerSettings, contract
from tests.helpers import ROOT

from .slow_proxy import SlowReplies
from .support import PHONE

pytestmark = pytest.mark.integration


# --- send_event_on_commit: the class-level hooks are registered while other sessions commit ----

#: A threaded web app with a class-level ``after_commit`` hook of its own (Flask-SQLAlchemy's
#: track_modifications, an audit log, a cache invalidation...). One request commits while
#: another sends the process's first on-commit event.
FIRST_EVENT_WHILE_ANOTHER_COMMITS = """
import sys, threading
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session
from producer import Producer, ProducerSettings
from producer.sqlalchemy import send_event_on_commit

engine = create_engine("sqlite://")
inside, registered = threading.Event(), threading.Event()

def apps_own_hook(session):
    if session.info.get("other request"):
        inside.set()
        registered.wait(5)  # (the hook is running while the other request sends)

event.listen(Session, "after_commit", apps_own_hook)
producer = Producer(ProducerSettings(redis_url=sys.argv[1]))
errors = []

def other_request():
    session = Session(engine)
    session.info["other request"] = True
    session.execute(text("select 1"))
    try:
        session.commit()
    except Exception as exc:
        errors.append(repr(exc))

thread = threading.Thread(target=other_request)
thread.start()
inside.wait(5)
session = Session(engine)
send_event_on_commit(session, "order_placed", phone="+915673412780", producer=producer)
registered.set()
thread.join()
session.commit()
print(errors)
"""


def test_the_first_on_commit_event_does_not_break_another_threads_commit(redis_url: str) -> None:
    """``_listen_once`` appends to the class-level listener deques that other threads may be
    iterating (SQLAlchemy documents that ``event.listen`` must not run while the event runs):
    the other request's ``commit()`` raises ``RuntimeError: deque mutated during iteration``
    after its data is committed. (Per-session listeners, before 7cfdbaf, touched no shared
    collection.) A fresh process: the hooks are registered once per process."""
    result = subprocess.run(
        [sys.executable, "-c", FIRST_EVENT_WHILE_ANOTHER_COMMITS, redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


# --- the sync producer's time bound ---------------------------------------------------------


def test_a_sync_send_on_a_slow_network_gives_up_within_twice_the_enqueue_timeout(
    redis_url: str, r: redis.Redis
) -> None:
    """Every reply 0.22 s late (a congested or distant network), each under the per-read
    timeout of 0.25 s: a new connection's handshake is several round trips (CLIENT SETNAME,
    CLIENT SETINFO twice, SELECT), each with its own timeout, then the LPUSH. Nothing bounds
    the whole call, as ``asyncio.timeout`` does for the async producer: the README promises
    about ``2 * LIMECHAT_ENQUEUE_TIMEOUT_SECONDS``."""
    parts = urlsplit(redis_url)
    relay = SlowReplies(parts.port or 6379, delay=0.22)
    relay.slow = 1000
    url = relay.url(int(parts.path.strip("/") or 0)) + "?client_name=shop"
    producer = Producer(ProducerSettings(redis_url=url, enqueue_timeout=0.5))
    started = time.monotonic()
    with contextlib.suppress(EnqueueError):
        producer.send_event("order_placed", phone=PHONE)
    took = time.monotonic() - started
    producer.close()
    relay.stop()
    assert took < 2 * 0.5, f"send_event took {took:.2f}s with a 0.5s enqueue timeout"


# --- fork: the first calls of a child's threads ------------------------------------------------


def test_a_forked_childs_threads_never_use_the_parents_connections(
    redis_url: str, r: redis.Redis
) -> None:
    """The pool starts afresh in the child as ``fork()`` returns, before any other thread of
    the child exists (before the fix, a check of the pid at each call let a second thread
    take the parent's connection while the first was resetting the pool: their replies
    crossed, and the semaphore was released once too often). Here eight threads of the child
    send at once; every connection they used is the child's own."""
    producer = Producer(ProducerSettings(redis_url=redis_url))
    producer.ping()  # (a connection idle in the parent's pool)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            pool = producer._redis
            fresh = pool._idle == []
            ids: list[str] = []
            workers = [
                threading.Thread(
                    target=lambda: ids.append(producer.send_event("order_placed", phone=PHONE))
                )
                for _ in range(8)
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            owners = {c.pid for c in pool._idle}
            report = {"fresh": fresh, "ids": ids, "owners": sorted(owners), "me": os.getpid()}
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        outcome = json.loads(pipe.read() or "{}")
    os.waitpid(child, 0)
    producer.ping()  # (the parent's own connection still answers its own calls)
    producer.close()
    assert outcome, "the child reported nothing"
    assert outcome["fresh"], "the child started with the parent's idle connections"
    assert len(outcome["ids"]) == 8 and all(len(i) == 36 for i in outcome["ids"]), outcome
    assert outcome["owners"] == [outcome["me"]], outcome
    assert r.llen(contract.QUEUE) == 8


# --- send_event_via_outbox: the session's own statement routing ------------------------------


def test_the_outbox_row_follows_the_sessions_do_orm_execute_routing() -> None:
    """Schema-per-tenant routing with a ``do_orm_execute`` hook (SQLAlchemy's documented way to
    set execution options for every statement a Session runs) applied to the outbox INSERT
    when it went through ``Session.execute``. ``session.connection(...).execute`` skips the
    hook since 351c9f0: the row goes to the default schema's table (or fails where that has
    none), not the tenant's, which the tenant's relay reads."""
    from sqlalchemy import create_engine, event, func, select, text
    from sqlalchemy.orm import ORMExecuteState, Session

    from producer.sqlalchemy import create_outbox_table, outbox_table, send_event_via_outbox
    from producer.sqlalchemy.relay import engine_url
    from tests.integration.outbox_support import private_schema

    class TenantSession(Session):
        pass

    @event.listens_for(TenantSession, "do_orm_execute")
    def _route(state: ORMExecuteState) -> None:
        state.update_execution_options(schema_translate_map={None: state.session.info["tenant"]})

    with private_schema() as url:
        engine = create_engine(engine_url(url))
        tenant = f"lc_tenant_{os.getpid()}"
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {tenant}"))
            create_outbox_table(conn)  # (the default schema's, found on the search path)
            create_outbox_table(conn.execution_options(schema_translate_map={None: tenant}))
        try:
            with TenantSession(engine, info={"tenant": tenant}) as session, session.begin():
                send_event_via_outbox(session, "order_placed", phone=PHONE)
            with engine.connect() as conn:
                count = select(func.count()).select_from(outbox_table)
                default = conn.execute(count).scalar_one()
                tenants = conn.execution_options(schema_translate_map={None: tenant}).execute(count)
                in_tenant = tenants.scalar_one()
        finally:
            with engine.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {tenant} CASCADE"))
            engine.dispose()
    assert (default, in_tenant) == (0, 1)
