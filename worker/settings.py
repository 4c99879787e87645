"""The worker's configuration: every environment variable of the README, parsed once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from producer import contract
from producer.config import DEFAULT_REDIS_URL, env_float, env_int, env_str, redis_url
from producer.errors import ConfigError

from .cpus import available_cpus
from .ratelimit import Rate, parse_rate

DEFAULT_API_URL = "https://flow-builder.limechat.ai/api/v1/cvf-events"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_RATE_LIMIT = "10/s"
DEFAULT_RATE_BURST = 5


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs; build it with :meth:`from_env`. Defaults live here only."""

    access_token: str = field(repr=False, metadata={"env": "LIMECHAT_ACCESS_TOKEN"})
    account_id: str = field(metadata={"env": "LIMECHAT_ACCOUNT_ID"})
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False, metadata={"env": "REDIS_URL"})
    api_url: str = field(default=DEFAULT_API_URL, metadata={"env": "LIMECHAT_API_URL"})
    rate_limit: str = field(default=DEFAULT_RATE_LIMIT, metadata={"env": "LIMECHAT_RATE_LIMIT"})
    rate_burst: int = field(default=DEFAULT_RATE_BURST, metadata={"env": "LIMECHAT_RATE_BURST"})
    max_attempts: int = field(default=12, metadata={"env": "LIMECHAT_MAX_ATTEMPTS"})
    retry_base_seconds: float = field(default=2.0, metadata={"env": "LIMECHAT_RETRY_BASE_SECONDS"})
    retry_max_seconds: float = field(default=600.0, metadata={"env": "LIMECHAT_RETRY_MAX_SECONDS"})
    timeout_seconds: float = field(default=10.0, metadata={"env": "LIMECHAT_TIMEOUT_SECONDS"})
    visibility_timeout: float = field(
        default=300.0, metadata={"env": "LIMECHAT_VISIBILITY_TIMEOUT"}
    )
    concurrency: int = field(default=16, metadata={"env": "LIMECHAT_WORKER_CONCURRENCY"})
    #: worker processes per ``limechat-events worker``; 0 (the default) means one per CPU
    processes: int = field(default=0, metadata={"env": "LIMECHAT_WORKER_PROCESSES"})
    batch_size: int = field(
        default=contract.DEFAULT_BATCH_SIZE, metadata={"env": "LIMECHAT_BATCH_SIZE"}
    )
    scheduler_interval: float = field(
        default=0.25, metadata={"env": "LIMECHAT_SCHEDULER_INTERVAL_SECONDS"}
    )
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL"})
    log_format: str = field(default="text", metadata={"env": "LOG_FORMAT"})
    dlq_max_entries: int = field(default=0, metadata={"env": "LIMECHAT_DLQ_MAX_ENTRIES"})
    dlq_max_age_seconds: float = field(
        default=0.0, metadata={"env": "LIMECHAT_DLQ_MAX_AGE_SECONDS"}
    )
    sentry_dsn: str = field(default="", repr=False, metadata={"env": "SENTRY_DSN"})
    sentry_environment: str = field(default="", metadata={"env": "SENTRY_ENVIRONMENT"})
    #: Celery's remote control (``celery inspect``, ``status``, Flower): ``on`` or ``off``
    remote_control: str = field(default="on", metadata={"env": "LIMECHAT_REMOTE_CONTROL"})

    @property
    def remote_control_on(self) -> bool:
        return self.remote_control == "on"

    @property
    def rate(self) -> Rate | None:
        """The parsed rate limit, or None when it is off."""
        return parse_rate(self.rate_limit, self.rate_burst)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, need_credentials: bool = True) -> Settings:
        """Parse the environment; :class:`ConfigError` names every missing credential.

        ``need_credentials=False`` checks every other variable (for ``ping``): the missing
        credentials are then empty, and such settings cannot run a worker.
        """
        missing = missing_credentials(environ)
        if missing and need_credentials:
            raise ConfigError(
                f"missing {' and '.join(missing)}: the worker needs LimeChat credentials "
                "(see README, 'Configuration'; `limechat-events up` runs against the "
                "local sandbox without them)"
            )
        d = defaults()
        shared = OperatorSettings.from_env(environ)
        base = env_float(environ, "LIMECHAT_RETRY_BASE_SECONDS", d["retry_base_seconds"])
        cap = env_float(environ, "LIMECHAT_RETRY_MAX_SECONDS", d["retry_max_seconds"])
        if cap < base:
            raise ConfigError(
                f"LIMECHAT_RETRY_MAX_SECONDS ({cap:g}) must not be below "
                f"LIMECHAT_RETRY_BASE_SECONDS ({base:g})"
            )
        log_level = env_str(environ, "LOG_LEVEL", d["log_level"]).upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL={log_level!r} must be one of {', '.join(LOG_LEVELS)}")
        log_format = env_str(environ, "LOG_FORMAT", d["log_format"]).lower()
        if log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT={log_format!r} must be text or json")
        return cls(
            access_token=environ.get("LIMECHAT_ACCESS_TOKEN", "").strip(),
            account_id=environ.get("LIMECHAT_ACCOUNT_ID", "").strip(),
            redis_url=shared.redis_url,
            api_url=_api_url(environ, d["api_url"]),
            rate_limit=shared.rate_limit,
            rate_burst=shared.rate_burst,
            max_attempts=env_int(environ, "LIMECHAT_MAX_ATTEMPTS", d["max_attempts"]),
            retry_base_seconds=base,
            retry_max_seconds=cap,
            timeout_seconds=env_float(
                environ, "LIMECHAT_TIMEOUT_SECONDS", d["timeout_seconds"], minimum=0.01
            ),
            visibility_timeout=env_float(
                environ, "LIMECHAT_VISIBILITY_TIMEOUT", d["visibility_timeout"], minimum=1.0
            ),
            concurrency=env_int(environ, "LIMECHAT_WORKER_CONCURRENCY", d["concurrency"]),
            processes=env_int(
                environ, "LIMECHAT_WORKER_PROCESSES", d["processes"] or available_cpus()
            ),
            batch_size=shared.batch_size,
            scheduler_interval=env_float(
                environ,
                "LIMECHAT_SCHEDULER_INTERVAL_SECONDS",
                d["scheduler_interval"],
                minimum=0.01,
            ),
            log_level=log_level,
            log_format=log_format,
            dlq_max_entries=env_int(
                environ, "LIMECHAT_DLQ_MAX_ENTRIES", d["dlq_max_entries"], minimum=0
            ),
            dlq_max_age_seconds=env_float(
                environ, "LIMECHAT_DLQ_MAX_AGE_SECONDS", d["dlq_max_age_seconds"]
            ),
            sentry_dsn=env_str(environ, "SENTRY_DSN", ""),
            sentry_environment=env_str(environ, "SENTRY_ENVIRONMENT", ""),
            remote_control=_on_off(environ, "LIMECHAT_REMOTE_CONTROL", d["remote_control"]),
        )


@dataclass(frozen=True)
class OperatorSettings:
    """What operator tools (``stats``, ``dlq``, ``retries``, ``ping``, the console) read: the
    part of :class:`Settings` that needs no LimeChat credentials, parsed by the same code."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    #: the account whose rate limit ``stats`` shows (LIMECHAT_ACCOUNT_ID), when set
    account_id: str | None = None
    rate_limit: str = DEFAULT_RATE_LIMIT
    rate_burst: int = DEFAULT_RATE_BURST
    batch_size: int = contract.DEFAULT_BATCH_SIZE

    @property
    def rate(self) -> Rate | None:
        return parse_rate(self.rate_limit, self.rate_burst)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorSettings:
        """Parse the shared variables; :class:`ConfigError` names the bad one."""
        d = defaults()
        rate_limit = env_str(environ, "LIMECHAT_RATE_LIMIT", d["rate_limit"])
        rate_burst = env_int(environ, "LIMECHAT_RATE_BURST", d["rate_burst"])
        parse_rate(rate_limit, rate_burst)  # refuse a bad value now, naming the variable
        return cls(
            redis_url=redis_url(environ),
            account_id=environ.get("LIMECHAT_ACCOUNT_ID", "").strip() or None,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            batch_size=env_int(environ, "LIMECHAT_BATCH_SIZE", d["batch_size"]),
        )


def missing_credentials(environ: Mapping[str, str]) -> list[str]:
    """The LimeChat credentials a worker needs that ``environ`` lacks."""
    return [
        name
        for name in ("LIMECHAT_ACCESS_TOKEN", "LIMECHAT_ACCOUNT_ID")
        if not environ.get(name, "").strip()
    ]


def defaults() -> dict[str, Any]:
    """Field name -> default, for the fields that have one."""
    return {f.name: f.default for f in fields(Settings) if f.default is not MISSING}


def environment_variables() -> dict[str, Any]:
    """Variable name -> default (None when required): what the README's table documents."""
    d = defaults()
    return {f.metadata["env"]: d.get(f.name) for f in fields(Settings)}


def _api_url(environ: Mapping[str, str], default: str) -> str:
    url = env_str(environ, "LIMECHAT_API_URL", default)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"LIMECHAT_API_URL={url!r} must be an http:// or https:// URL")
    return url


_SWITCH = {
    **dict.fromkeys(("on", "true", "yes", "1"), "on"),
    **dict.fromkeys(("off", "false", "no", "0"), "off"),
}


def _on_off(environ: Mapping[str, str], name: str, default: str) -> str:
    raw = env_str(environ, name, default)
    try:
        return _SWITCH[raw.lower()]
    except KeyError:
        raise ConfigError(f"{name}={raw!r} must be on or off") from None
