"""Fixtures of the chaos tests: a misbehaving receiver, Redis servers of their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .receiver import ChaosReceiver
from .redis_server import RedisServer


@pytest.fixture
def chaos() -> Iterator[ChaosReceiver]:
    """A receiver answering 200 until a test gives it a ``script``."""
    receiver = ChaosReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start ``redis-server`` processes of the test's own (AOF, everysec); all gone after."""
    servers: list[RedisServer] = []

    def start(**options: object) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **options)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()
