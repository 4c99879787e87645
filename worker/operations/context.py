"""Where operations run: the operator settings and one Redis client for our own keys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import redis

from producer.config import redacted_url

from ..settings import OperatorSettings
from .errors import StoreError


@dataclass
class Ops:
    """The settings and a (lazily connected) Redis client every operation takes.

    Build one per process (a web console keeps one: redis-py's pool is thread-safe) with
    :meth:`from_env`, or from settings of your own. Needs no LimeChat credentials.
    """

    settings: OperatorSettings
    _client: redis.Redis | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Ops:
        """:class:`~producer.errors.ConfigError`, naming the variable, if one is malformed."""
        return cls(OperatorSettings.from_env(environ))

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            from ..app import state_client

            # (not patient: an operator wants an answer, not 30 s of retries)
            self._client = state_client(self.settings.redis_url, patient=False)
        return self._client

    @contextlib.contextmanager
    def store(self) -> Iterator[redis.Redis]:
        """The client, with any Redis failure raised as :class:`StoreError` (password hidden)."""
        try:
            yield self.client
        except redis.RedisError as exc:
            raise StoreError(self.describe(exc)) from None

    def describe(self, exc: Exception) -> str:
        url = redacted_url(self.settings.redis_url)
        return f"Redis at {url}: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
