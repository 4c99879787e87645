"""gunicorn settings for the example: create the tables once, in the arbiter, before forking."""

from __future__ import annotations

import os

from sqlalchemy import create_engine

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))


def on_starting(server: object) -> None:
    from app import metadata  # (the arbiter imports the app module only here)

    engine = create_engine(os.environ["DATABASE_URL"])
    metadata.create_all(engine)
    engine.dispose()
