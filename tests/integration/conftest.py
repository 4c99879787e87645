"""Fixtures the example-shop tests (Django, Flask, FastAPI) and the SQLAlchemy outbox tests
share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.helpers import WorkerProcess, stop_all
from tests.integration.django_shop_support import (
    ShopDatabase,
    manage,
    postgres_schema,
    shop_env,
)
from tests.integration.outbox_support import outbox_engine, private_schema


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    """Started servers, relays and workers, stopped (or killed) at the end whatever happens."""
    started: list[WorkerProcess] = []
    yield started
    stop_all(reversed(started))


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


@pytest.fixture
def database_url() -> Iterator[str]:
    """A PostgreSQL schema of the test's own (dropped afterwards): its database URL."""
    with private_schema() as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on ``database_url``, the outbox table created."""
    engine = outbox_engine(database_url)
    yield engine
    engine.dispose()
