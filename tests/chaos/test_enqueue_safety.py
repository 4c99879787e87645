"""A slow Redis never makes one call enqueue an event twice, and EnqueueError means what it says.

A relay in front of a Redis of the test's own holds one reply longer than
``LIMECHAT_ENQUEUE_TIMEOUT_SECONDS``: the command has run, but the producer cannot know. The
call gives up with ``EnqueueError``; the event is queued, once (before the fix, redis-py's retry
on a fresh connection sent it again); and an idempotency key makes the caller's retry enqueue
nothing more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from producer import EnqueueError, Producer, ProducerSettings, contract

from .redis_server import RedisServer
from .slow_proxy import SlowReplies
from .support import PHONE, items, queued_events

pytestmark = pytest.mark.integration

TIMEOUT = 0.4  # LIMECHAT_ENQUEUE_TIMEOUT_SECONDS: the slow reply comes after 2 x this


@pytest.fixture
def slow(own_redis: Callable[..., RedisServer]) -> Iterator[tuple[RedisServer, Producer]]:
    server = own_redis(appendonly=False)
    relay = SlowReplies(server.port, delay=2 * TIMEOUT)
    producer = Producer(ProducerSettings(redis_url=relay.url(), enqueue_timeout=TIMEOUT))
    producer.ping()  # (a connection in the pool, as in a web app that already sent)
    relay.slow = 1  # the reply to the next command is late
    yield server, producer
    producer.close()
    relay.stop()


def settled(server: RedisServer) -> None:
    """Give late replies and any second try time to reach Redis."""
    time.sleep(4 * TIMEOUT)


def test_a_timed_out_send_event_enqueues_the_event_once(
    slow: tuple[RedisServer, Producer],
) -> None:
    server, producer = slow
    with pytest.raises(EnqueueError):
        producer.send_event("order_placed", phone=PHONE, data={"seq": 1})
    settled(server)
    # The command ran (that is what a timeout cannot rule out): the event is queued, once.
    assert queued_events(server.client()) == 1


def test_a_timed_out_send_events_enqueues_each_event_once(
    slow: tuple[RedisServer, Producer],
) -> None:
    server, producer = slow
    with pytest.raises(EnqueueError):
        producer.send_events(items(range(5)))
    settled(server)
    assert queued_events(server.client()) == 5


def test_an_idempotency_key_makes_the_retry_after_a_timeout_safe(
    slow: tuple[RedisServer, Producer],
) -> None:
    server, producer = slow
    with pytest.raises(EnqueueError):
        producer.send_event("order_placed", phone=PHONE, idempotency_key="order-1")
    settled(server)
    # The caller retries, as the README says to: the key stops a second copy, and the call
    # answers with the id of the event the first try queued.
    retried = Producer(ProducerSettings(redis_url=server.url, enqueue_timeout=TIMEOUT))
    first = retried.send_event("order_placed", phone=PHONE, idempotency_key="order-1")
    [message] = server.client().lrange(contract.QUEUE, 0, -1)
    assert first in json.loads(message)["headers"]["argsrepr"]
    retried.close()


def test_the_url_cannot_stretch_the_enqueue_timeout(
    own_redis: Callable[..., RedisServer],
) -> None:
    # (redis-py lets ?socket_timeout= in the URL override the producer's own timeouts: a web
    # request then hung for as long as the URL said)
    server = own_redis(appendonly=False)
    relay = SlowReplies(server.port, delay=10)
    url = relay.url() + "?socket_timeout=8&socket_connect_timeout=8"
    producer = Producer(ProducerSettings(redis_url=url, enqueue_timeout=TIMEOUT))
    producer.ping()
    relay.slow = 1
    started = time.monotonic()
    with pytest.raises(EnqueueError):
        producer.send_event("order_placed", phone=PHONE)
    # The promise: about the enqueue timeout (0.4 s here); 3 s is the generous bound.
    assert time.monotonic() - started < 3
    producer.close()
    relay.stop()
