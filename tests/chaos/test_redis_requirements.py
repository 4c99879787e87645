"""What the Redis server must be: 6.2 or later (refused otherwise), and never evicting (warned).

A Redis older than 6.2 lacks ``BLMOVE`` and ``ZRANGE ... BYSCORE``, which the worker needs to
take messages and to restore a dead worker's: it must refuse to start there, naming the minimum
version, and ``ping`` must fail. A ``maxmemory-policy`` that evicts lets Redis delete queued
events, retries and dead letters silently: the worker, ``ping`` and ``stats`` say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import WorkerProcess, run_cli, worker_env
from worker.sandbox import Sandbox

from .old_redis import VERSION, OldRedis
from .redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def old_redis() -> Iterator[OldRedis]:
    server = OldRedis()
    yield server
    server.stop()


def test_ping_fails_on_a_redis_older_than_6_2(old_redis: OldRedis, receiver: Sandbox) -> None:
    result = run_cli(worker_env(old_redis.url, receiver.url), "ping")
    assert result.returncode == 1, result
    assert "Redis 6.2 or later is required" in result.stderr
    assert f"this server is {VERSION}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_the_worker_refuses_to_start_on_a_redis_older_than_6_2(
    old_redis: OldRedis, receiver: Sandbox, processes: str
) -> None:
    env = worker_env(old_redis.url, receiver.url, LIMECHAT_WORKER_PROCESSES=processes)
    result = run_cli(env, "worker", timeout=60)
    assert result.returncode == 2, result
    assert "Redis 6.2 or later is required" in result.stderr + result.stdout
    # (it stopped before taking anything: no BLMOVE ever reached the server)
    assert not any(c[0].upper() == "BLMOVE" for c in old_redis.commands)


def evicting(own_redis: Callable[..., RedisServer], policy: str) -> RedisServer:
    server = own_redis(appendonly=False)
    client = server.client()
    client.config_set("maxmemory", "64mb")
    client.config_set("maxmemory-policy", policy)
    client.close()
    return server


def test_an_evicting_redis_is_warned_about_at_start_in_ping_and_in_stats(
    own_redis: Callable[..., RedisServer], receiver: Sandbox
) -> None:
    server = evicting(own_redis, "allkeys-lru")
    env = worker_env(server.url, receiver.url)
    said = "maxmemory-policy is allkeys-lru"

    ping = run_cli(env, "ping")
    assert ping.returncode == 0 and ping.stdout.strip() == "ok", ping
    assert f"warning: Redis' {said}" in ping.stderr
    stats = run_cli(env, "stats")
    assert stats.returncode == 0, stats
    assert stats.stdout.startswith(f"WARNING: Redis' {said}")
    as_json = json.loads(run_cli(env, "stats", "--json").stdout)
    assert as_json["redis"]["maxmemory_policy"] == "allkeys-lru"
    assert any(said in w for w in as_json["redis"]["warnings"])
    worker = WorkerProcess(env).start()
    try:
        assert worker.saw(said), worker.text()
    finally:
        worker.stop()


def test_noeviction_is_not_warned_about(
    own_redis: Callable[..., RedisServer], receiver: Sandbox
) -> None:
    env = worker_env(evicting(own_redis, "noeviction").url, receiver.url)
    ping = run_cli(env, "ping")
    assert (ping.returncode, ping.stderr) == (0, ""), ping
    assert json.loads(run_cli(env, "stats", "--json").stdout)["redis"]["warnings"] == []
    assert "WARNING" not in run_cli(env, "stats").stdout


def test_stats_says_when_redis_is_full(
    own_redis: Callable[..., RedisServer], receiver: Sandbox
) -> None:
    server = own_redis(appendonly=False)
    client = server.client()
    client.config_set("maxmemory", "4mb")
    client.config_set("maxmemory-policy", "noeviction")
    try:
        for i in range(1000):
            client.set(f"filler:{i}", b"x" * 65536)
    except Exception:
        pass
    stats = run_cli(worker_env(server.url, receiver.url), "stats")
    assert stats.returncode == 0, stats
    assert "WARNING: Redis is full" in stats.stdout
