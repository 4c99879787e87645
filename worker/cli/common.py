"""What every command shares: failing with an exit code, and the operations' settings."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import NoReturn

import click

from producer.errors import ConfigError

from ..operations import Ops, SelectionError, StoreError


def fail(message: str, code: int = 1) -> NoReturn:
    """``error: <message>`` on stderr, then exit: 1 a runtime failure, 2 bad input or config."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def operations() -> Ops:
    """The operator settings from the environment (no LimeChat credentials needed)."""
    try:
        return Ops.from_env(os.environ)
    except ConfigError as exc:
        fail(str(exc), 2)


@contextlib.contextmanager
def failures() -> Iterator[None]:
    """Bad input or configuration exits 2; Redis failing exits 1 (its password hidden)."""
    try:
        yield
    except (ConfigError, SelectionError) as exc:
        fail(str(exc), 2)
    except StoreError as exc:
        fail(str(exc), 1)
