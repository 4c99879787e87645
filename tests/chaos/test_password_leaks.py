"""The Redis password stays secret on every path: query strings, Sentry frame variables, reprs.

redis-py honours the password in ``?password=`` as well as in the netloc; kombu's URL parser
died on it. A web app reporting an ``EnqueueError`` to Sentry with sentry-sdk's defaults sends
the local variables of every frame of the traceback: none may hold the password.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from urllib.parse import quote

import pytest

from producer import EnqueueError, Producer, ProducerSettings
from tests.helpers import ROOT, SentryIngest, run_cli, running_worker, worker_env

from .receiver import ChaosReceiver
from .redis_server import RedisServer, free_port
from .support import send_numbered, wait_settled
from .test_secrets import PASSWORD, assert_never_shown, cli

pytestmark = pytest.mark.integration


def in_query(port: int, password: str) -> str:
    return f"redis://127.0.0.1:{port}/0?password={quote(password, safe='')}&health_check_interval=5"


def test_a_password_in_the_query_string_works_everywhere_and_is_never_shown(
    own_redis: Callable[..., RedisServer], chaos: ChaosReceiver
) -> None:
    server = own_redis(password=PASSWORD)
    url = in_query(server.port, PASSWORD)
    producer = Producer(ProducerSettings(redis_url=url, batch_size=10))
    send_numbered(producer, range(10))
    producer.close()
    with running_worker(worker_env(url, chaos.url)) as worker:
        tally = wait_settled(range(10), chaos, server.client(), 30, "delivery")
    assert (tally.delivered, tally.dead_lettered) == (10, 0)
    texts = [worker.text()]
    for args in (["ping"], ["stats", "--json"], ["dlq", "list"]):
        result = cli(url, *args)
        assert result.returncode == 0, result.stderr
        texts += [result.stdout, result.stderr]
    assert "?password=***" in worker.text() or ":**@" in worker.text()
    assert_never_shown("\n".join(texts))


def test_a_wrong_password_in_the_query_string_is_never_shown(
    own_redis: Callable[..., RedisServer],
) -> None:
    server = own_redis(password="the-right-one")
    url = in_query(server.port, PASSWORD)
    producer = Producer(ProducerSettings(redis_url=url, enqueue_timeout=0.5))
    with pytest.raises(EnqueueError) as refused:
        producer.send_event("order_placed", phone="+915673412780")
    producer.close()
    texts = [str(refused.value)]
    assert "password=***" in str(refused.value)
    for args in (["send", "order_placed", "--phone", "+915673412780"], ["ping"], ["stats"]):
        result = cli(url, *args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result
        texts += [result.stdout, result.stderr]
    assert_never_shown("\n".join(texts))


#: A web app that reports what it catches, with sentry-sdk's defaults (frame variables on).
WEB_APP = """
import logging, os
import sentry_sdk
from producer import EnqueueError, send_event

sentry_sdk.init(dsn=os.environ["SENTRY_DSN"])  # REDIS_URL is in the environment too

def place_order(order_id, report):
    try:
        send_event("order_placed", phone="+915673412780", data={"order_id": order_id})
    except EnqueueError:
        report()
        return "queued later"
    return "sent"

print(place_order("98765", sentry_sdk.capture_exception))
print(place_order("98766", lambda: logging.getLogger("shop").exception("order_placed lost")))
sentry_sdk.flush(10)
"""


@pytest.mark.parametrize("where", ["netloc", "query"])
@pytest.mark.parametrize("redis_state", ["down", "wrong password"])
def test_the_redis_password_never_reaches_sentry_from_a_web_app(
    own_redis: Callable[..., RedisServer], where: str, redis_state: str
) -> None:
    port = free_port() if redis_state == "down" else own_redis(password="the-right-one").port
    if where == "netloc":
        url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/0"
    else:
        url = in_query(port, PASSWORD)
    ingest = SentryIngest()
    env = {**worker_env(url, "http://127.0.0.1:1/"), "SENTRY_DSN": ingest.dsn}
    env["LIMECHAT_ENQUEUE_TIMEOUT_SECONDS"] = "0.5"
    result = subprocess.run(
        [sys.executable, "-c", WEB_APP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["queued", "later"] * 2, result.stderr
    events = ingest.events()
    assert len(events) == 2, ingest.text()[-2000:]  # capture_exception, logger.exception
    sent = ingest.text()
    assert "EnqueueError" in sent
    assert '"vars"' in sent and "place_order" in sent  # frame variables were sent...
    assert_never_shown(sent + result.stdout + result.stderr)  # ...without the password


def test_settings_reprs_hide_the_password() -> None:
    from worker.settings import Settings

    encoded = quote(PASSWORD, safe="")
    url = f"redis://:{encoded}@127.0.0.1:6379/0?password=x{encoded}"
    env = worker_env(url, "http://127.0.0.1:1/api/v1/cvf-events")
    texts = [repr(Settings.from_env(env)), repr(ProducerSettings(redis_url=url))]
    texts.append(repr(Producer(ProducerSettings(redis_url=url))))
    assert_never_shown("\n".join(texts))
    assert_never_shown(run_cli(env, "stats", "--json").stderr)
