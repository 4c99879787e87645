"""Fixtures: a clean private Redis database, a real local HTTP receiver, worker processes.

A missing Redis skips the integration tests locally, with the reason, but fails them in CI.
So does every other skip: each of ours says a service or tool is missing (``redis-server``,
``openssl``, a TLS build of Redis), which in CI is a broken set-up, not a test to leave out.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest
import redis

from producer import Producer, ProducerSettings
from tests.helpers import TEST_ACCOUNT, TEST_TOKEN, worker_env
from worker.sandbox import Sandbox

TEST_REDIS_URL = os.environ.get("LIMECHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def in_ci() -> bool:
    """Whether this run is CI's (``.ci/run`` exports ``CI=true``): a missing service fails."""
    return bool(os.environ.get("CI"))


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip into a failure that gives the skip's reason, when running in CI."""
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return  # an expected failure (xfail) is reported as skipped too: it stays what it is
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, where every service the tests need must be present: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI a test that skips (in a fixture or in its body) fails, with the reason."""
    report = yield
    _fail_skip_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """In CI a module that skips itself at import (``allow_module_level``) is an error."""
    report = yield
    _fail_skip_in_ci(report)
    return report


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own, empty before the test and after it."""
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at {TEST_REDIS_URL} does not answer ({exc}); run scripts/ensure-redis"
        if in_ci():
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
