"""Fixtures the example-shop tests share (Django, Flask, FastAPI)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import WorkerProcess
from tests.integration.django_shop_support import (
    ShopDatabase,
    manage,
    postgres_schema,
    shop_env,
)


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    """Started servers, relays and workers, stopped (or killed) at the end whatever happens."""
    started: list[WorkerProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="module")
def django_shop_database_url() -> Iterator[str]:
    """A schema of the test module's own with the Django shop's tables (``manage.py migrate``)."""
    with postgres_schema() as url:
        manage(shop_env("redis://127.0.0.1:1/0", url), "migrate", "--no-input")
        yield url


@pytest.fixture
def django_shop_db(django_shop_database_url: str) -> Iterator[ShopDatabase]:
    """The Django shop's tables (examples/django_shop), empty at the start and at the end."""
    database = ShopDatabase(django_shop_database_url)
    database.empty_tables()
    yield database
    database.empty_tables()
