"""Reading settings from the environment: one parser per type, each naming the variable."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import contract
from .errors import ConfigError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_ENQUEUE_TIMEOUT_SECONDS = 0.5


def env_str(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    return value or default


def env_float(
    environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0
) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number (seconds, e.g. 0.5)") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={raw!r} must be a finite number >= {minimum:g}")
    return value


def env_int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def redis_url(environ: Mapping[str, str]) -> str:
    """``REDIS_URL``, checked for a scheme redis-py understands."""
    url = env_str(environ, "REDIS_URL", DEFAULT_REDIS_URL)
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"REDIS_URL must start with redis://, rediss:// or unix:// (got {scheme or 'no'}"
            " scheme)"
        )
    return url


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


@dataclass(frozen=True)
class ProducerSettings:
    """What ``send_event`` needs: where Redis is, how long to wait for it, how to batch."""

    redis_url: str = DEFAULT_REDIS_URL
    enqueue_timeout: float = DEFAULT_ENQUEUE_TIMEOUT_SECONDS
    batch_size: int = contract.DEFAULT_BATCH_SIZE

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProducerSettings:
        return cls(
            redis_url=redis_url(environ),
            enqueue_timeout=env_float(
                environ,
                "LIMECHAT_ENQUEUE_TIMEOUT_SECONDS",
                DEFAULT_ENQUEUE_TIMEOUT_SECONDS,
                minimum=0.001,
            ),
            batch_size=env_int(environ, "LIMECHAT_BATCH_SIZE", contract.DEFAULT_BATCH_SIZE),
        )
