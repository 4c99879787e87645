"""Reading settings from the environment: one parser per type, each naming the variable."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

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
    """``REDIS_URL``, checked for a scheme redis-py understands and a password it can read."""
    return check_redis_url(env_str(environ, "REDIS_URL", DEFAULT_REDIS_URL))


def check_redis_url(url: str) -> str:
    """``url`` if redis-py can read it as meant, else :class:`ConfigError` (never showing it)."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"REDIS_URL must start with redis://, rediss:// or unix:// (got {scheme or 'no'}"
            " scheme)"
        )
    if _misread(url):
        # (the URL is not shown: what looks like a fragment or a path is part of a password)
        raise ConfigError(
            "REDIS_URL cannot be read as written: a password holding #, ?, / or @ must be "
            "percent-encoded (# as %23, ? as %3F, / as %2F, @ as %40)"
        )
    return url


def _misread(url: str) -> bool:
    """Whether ``url`` splits where its writer did not mean it to (an unencoded password).

    redis-py then connects to another host (localhost, when the password's ``#`` cut the rest
    off as a fragment) and shows the password in its errors as part of the path or fragment.
    """
    parts = urlsplit(url)
    return bool(parts.fragment) or "@" in parts.path or "@" in parts.query


#: Query parameters that carry a secret: redis-py honours ``?password=`` (and
#: ``?ssl_password=`` for the client key) as well as a password in the netloc.
_SECRET_PARAMETER = re.compile(r"pass", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """``url`` with every password replaced by ``***``, for logs and error messages."""
    if _misread(url):
        return f"{url.split(':', 1)[0]}://<a URL with an unencoded password: hidden>"
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
        if _SECRET_PARAMETER.search(query):
            pairs = parse_qsl(query, keep_blank_values=True)
            hidden = [(k, "***" if _SECRET_PARAMETER.search(k) else v) for k, v in pairs]
            query = urlencode(hidden, safe="*/")
    except ValueError:  # (not a URL we can take apart: show none of it)
        return "<a URL that cannot be parsed>"
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def url_secrets(url: str) -> list[str]:
    """The passwords in ``url``, as written and decoded, longest first (to scrub text with)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += re.findall(r"(?i)pass[^=&]*=([^&]*)", parts.query)
    except ValueError:
        return []
    every = {s for s in found if s} | {unquote(s) for s in found if s}
    return sorted(every, key=len, reverse=True)


@dataclass(frozen=True)
class ProducerSettings:
    """What ``send_event`` needs: where Redis is, how long to wait for it, how to batch."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # (it may hold a password)
    enqueue_timeout: float = DEFAULT_ENQUEUE_TIMEOUT_SECONDS
    batch_size: int = contract.DEFAULT_BATCH_SIZE
    #: The account ``account=None`` means (the workers' default), when this process knows it:
    #: idempotency keys given with None and with that account then share one scope.
    default_account: str | None = None

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
            default_account=env_str(environ, "LIMECHAT_ACCOUNT_ID", "") or None,
        )
