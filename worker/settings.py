"""The worker's configuration: every environment variable of the README, parsed once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from producer import contract
from producer.config import env_float, env_int, env_str, redis_url
from producer.errors import ConfigError

DEFAULT_API_URL = "https://flow-builder.limechat.ai/api/v1/cvf-events"

#: name -> (default shown in docs, meaning); the README's table is checked against this.
DEFAULTS: dict[str, str] = {
    "REDIS_URL": "redis://localhost:6379/0",
    "LIMECHAT_ACCESS_TOKEN": "(required by the worker)",
    "LIMECHAT_ACCOUNT_ID": "(required by the worker)",
    "LIMECHAT_API_URL": DEFAULT_API_URL,
    "LIMECHAT_MAX_ATTEMPTS": "10",
    "LIMECHAT_RETRY_BASE_SECONDS": "2",
    "LIMECHAT_RETRY_MAX_SECONDS": "600",
    "LIMECHAT_TIMEOUT_SECONDS": "10",
    "LIMECHAT_VISIBILITY_TIMEOUT": "300",
    "LIMECHAT_WORKER_CONCURRENCY": "16",
    "LIMECHAT_BATCH_SIZE": str(contract.DEFAULT_BATCH_SIZE),
    "LIMECHAT_ENQUEUE_TIMEOUT_SECONDS": "0.5",
    "LIMECHAT_SCHEDULER_INTERVAL_SECONDS": "1",
    "LOG_LEVEL": "INFO",
}


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs; build it with :meth:`from_env`."""

    access_token: str = field(repr=False)
    account_id: str
    redis_url: str = "redis://localhost:6379/0"
    api_url: str = DEFAULT_API_URL
    max_attempts: int = 10
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    timeout_seconds: float = 10.0
    visibility_timeout: float = 300.0
    concurrency: int = 16
    batch_size: int = contract.DEFAULT_BATCH_SIZE
    scheduler_interval: float = 1.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse the environment; :class:`ConfigError` names every missing credential."""
        missing = [
            name
            for name in ("LIMECHAT_ACCESS_TOKEN", "LIMECHAT_ACCOUNT_ID")
            if not environ.get(name, "").strip()
        ]
        if missing:
            raise ConfigError(
                f"missing {' and '.join(missing)}: the worker needs LimeChat credentials "
                "(see README, 'Configuration'; `limechat-events up` runs against the "
                "local sandbox without them)"
            )
        base = env_float(environ, "LIMECHAT_RETRY_BASE_SECONDS", 2.0, minimum=0.0)
        cap = env_float(environ, "LIMECHAT_RETRY_MAX_SECONDS", 600.0, minimum=0.0)
        if cap < base:
            raise ConfigError(
                f"LIMECHAT_RETRY_MAX_SECONDS ({cap:g}) must not be below "
                f"LIMECHAT_RETRY_BASE_SECONDS ({base:g})"
            )
        log_level = env_str(environ, "LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"LOG_LEVEL={log_level!r} must be DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        return cls(
            access_token=environ["LIMECHAT_ACCESS_TOKEN"].strip(),
            account_id=environ["LIMECHAT_ACCOUNT_ID"].strip(),
            redis_url=redis_url(environ),
            api_url=_api_url(environ),
            max_attempts=env_int(environ, "LIMECHAT_MAX_ATTEMPTS", 10),
            retry_base_seconds=base,
            retry_max_seconds=cap,
            timeout_seconds=env_float(environ, "LIMECHAT_TIMEOUT_SECONDS", 10.0, minimum=0.01),
            visibility_timeout=env_float(
                environ, "LIMECHAT_VISIBILITY_TIMEOUT", 300.0, minimum=1.0
            ),
            concurrency=env_int(environ, "LIMECHAT_WORKER_CONCURRENCY", 16),
            batch_size=env_int(environ, "LIMECHAT_BATCH_SIZE", contract.DEFAULT_BATCH_SIZE),
            scheduler_interval=env_float(
                environ, "LIMECHAT_SCHEDULER_INTERVAL_SECONDS", 1.0, minimum=0.01
            ),
            log_level=log_level,
        )


def _api_url(environ: Mapping[str, str]) -> str:
    url = env_str(environ, "LIMECHAT_API_URL", DEFAULT_API_URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"LIMECHAT_API_URL={url!r} must be an http:// or https:// URL")
    return url
