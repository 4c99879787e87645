"""Every form of REDIS_URL redis-py accepts works for the worker too, on the same database.

The producer and the CLI read ``REDIS_URL`` with redis-py; the worker's broker with kombu, which
reads URLs differently: ``?db=N`` ignored (the broker on db 0 while the producer wrote db N:
events accepted, never delivered, the worker looking healthy), ``unix://`` sockets refused.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from producer import Producer, ProducerSettings
from tests.helpers import running_worker, wait_for, worker_env

from .receiver import ChaosReceiver
from .support import send_numbered, wait_settled

pytestmark = pytest.mark.integration


def deliver_through(url: str, chaos: ChaosReceiver, check: redis.Redis) -> None:
    producer = Producer(ProducerSettings(redis_url=url, batch_size=5))
    send_numbered(producer, range(10))
    producer.close()
    with running_worker(worker_env(url, chaos.url)):
        tally = wait_settled(range(10), chaos, check, 30, "delivery")
    assert (tally.delivered, tally.dead_lettered) == (10, 0)


def test_db_in_the_query_string(redis_url: str, chaos: ChaosReceiver, r: redis.Redis) -> None:
    parts = urlsplit(redis_url)
    db = parts.path.strip("/") or "0"
    url = f"redis://{parts.netloc}/?db={db}"
    deliver_through(url, chaos, r)


@pytest.fixture
def unix_socket_redis(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed"
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [server, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(sock.exists, 20, "the socket")
        time.sleep(0.2)
        yield f"unix://{sock}?db=2"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_unix_socket_with_a_database(unix_socket_redis: str, chaos: ChaosReceiver) -> None:
    check = redis.Redis.from_url(unix_socket_redis)
    deliver_through(unix_socket_redis, chaos, check)
    assert check.dbsize()  # (the data went to db 2, where the producer wrote)
