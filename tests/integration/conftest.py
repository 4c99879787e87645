"""Fixtures the example-shop tests share (Django, Flask, FastAPI)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import WorkerProcess


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    """Started servers, relays and workers, stopped (or killed) at the end whatever happens."""
    started: list[WorkerProcess] = []
    yield started
    for process in reversed(started):
        process.stop()
