"""Fixtures: a clean private Redis database, a real local HTTP receiver, worker processes.

A missing Redis skips the integration tests locally, with the reason, but fails them in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from producer import Producer, ProducerSettings
from tests.helpers import TEST_ACCOUNT, TEST_TOKEN, worker_env
from worker.sandbox import Sandbox

TEST_REDIS_URL = os.environ.get("LIMECHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own, empty before the test and after it."""
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at {TEST_REDIS_URL} does not answer ({exc}); run scripts/ensure-redis"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    p = Producer(ProducerSettings(redis_url=redis_url, batch_size=10))
    yield p
    p.close()


@pytest.fixture
def receiver() -> Iterator[Sandbox]:
    """The sandbox, strict about the token and account, on a free port."""
    sandbox = Sandbox(token=TEST_TOKEN, account=TEST_ACCOUNT).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def env(redis_url: str, receiver: Sandbox) -> dict[str, str]:
    return worker_env(redis_url, receiver.url)
