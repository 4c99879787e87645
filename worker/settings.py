"""The worker's configuration: every environment variable of the README, declared once (each
field of :class:`Settings` names its variable, its reader and its default) and read by a table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from producer import contract
from producer.config import DEFAULT_REDIS_URL, check_redis_url, env_float, env_int, env_str
from producer.errors import ConfigError

from . import accounts as accounts_
from .accounts import Accounts
from .cpus import available_cpus
from .ratelimit import Rate, parse_rate

DEFAULT_API_URL = "https://flow-builder.limechat.ai/api/v1/cvf-events"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_RATE_LIMIT = "10/s"
DEFAULT_RATE_BURST = 5

#: Reads one variable: (environ, its name, the default) -> the value, or ConfigError naming it.
Reader = Callable[[Mapping[str, str], str, Any], Any]


def _text(environ: Mapping[str, str], name: str, default: Any) -> str:
    return env_str(environ, name, default)


def _int(minimum: int = 1) -> Reader:
    return lambda environ, name, default: env_int(environ, name, default, minimum=minimum)


def _float(minimum: float = 0.0) -> Reader:
    return lambda environ, name, default: env_float(environ, name, default, minimum=minimum)


def _choice(*allowed: str, upper: bool = False) -> Reader:
    def read(environ: Mapping[str, str], name: str, default: Any) -> str:
        raw = env_str(environ, name, default)
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            raise ConfigError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
        return value

    return read


def _redis(environ: Mapping[str, str], name: str, default: Any) -> str:
    return check_redis_url(env_str(environ, name, default))


def _url(environ: Mapping[str, str], name: str, default: Any) -> str:
    url = env_str(environ, name, default)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={url!r} must be an http:// or https:// URL")
    return url


_SWITCH = {
    **dict.fromkeys(("on", "true", "yes", "1"), "on"),
    **dict.fromkeys(("off", "false", "no", "0"), "off"),
}


def _on_off(environ: Mapping[str, str], name: str, default: Any) -> str:
    raw = env_str(environ, name, default)
    try:
        return _SWITCH[raw.lower()]
    except KeyError:
        raise ConfigError(f"{name}={raw!r} must be on or off") from None


def _env(name: str, read: Reader = _text, **kwargs: Any) -> Any:
    """A field read from variable ``name`` by ``read`` (which names it in its errors)."""
    return field(metadata={"env": name, "read": read}, **kwargs)


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs; build it with :meth:`from_env`. Each field declares its
    variable, reader and default here, once: ``from_env`` and the README's table (checked by
    tests/unit/test_project_files.py) both go by these declarations."""

    access_token: str = _env("LIMECHAT_ACCESS_TOKEN", repr=False)
    account_id: str = _env("LIMECHAT_ACCOUNT_ID")
    redis_url: str = _env("REDIS_URL", _redis, default=DEFAULT_REDIS_URL, repr=False)
    api_url: str = _env("LIMECHAT_API_URL", _url, default=DEFAULT_API_URL)
    #: several accounts (worker/accounts.py), instead of the two credentials above
    accounts_file: str = _env("LIMECHAT_ACCOUNTS_FILE", default="")
    rate_limit: str = _env("LIMECHAT_RATE_LIMIT", default=DEFAULT_RATE_LIMIT)
    rate_burst: int = _env("LIMECHAT_RATE_BURST", _int(), default=DEFAULT_RATE_BURST)
    max_attempts: int = _env("LIMECHAT_MAX_ATTEMPTS", _int(), default=12)
    retry_base_seconds: float = _env("LIMECHAT_RETRY_BASE_SECONDS", _float(), default=2.0)
    retry_max_seconds: float = _env("LIMECHAT_RETRY_MAX_SECONDS", _float(), default=600.0)
    timeout_seconds: float = _env("LIMECHAT_TIMEOUT_SECONDS", _float(0.01), default=10.0)
    visibility_timeout: float = _env("LIMECHAT_VISIBILITY_TIMEOUT", _float(1.0), default=300.0)
    concurrency: int = _env("LIMECHAT_WORKER_CONCURRENCY", _int(), default=16)
    #: requests one account may have out per worker process; 0: none with one account, a
    #: quarter of the threads with several (worker/inflight.py)
    account_concurrency: int = _env("LIMECHAT_ACCOUNT_CONCURRENCY", _int(0), default=0)
    #: worker processes per ``limechat-events worker``; 0 (the default) means one per CPU
    processes: int = _env("LIMECHAT_WORKER_PROCESSES", _int(), default=0)
    batch_size: int = _env("LIMECHAT_BATCH_SIZE", _int(), default=contract.DEFAULT_BATCH_SIZE)
    scheduler_interval: float = _env(
        "LIMECHAT_SCHEDULER_INTERVAL_SECONDS", _float(0.01), default=0.25
    )
    log_level: str = _env("LOG_LEVEL", _choice(*LOG_LEVELS, upper=True), default="INFO")
    log_format: str = _env("LOG_FORMAT", _choice("text", "json"), default="text")
    dlq_max_entries: int = _env("LIMECHAT_DLQ_MAX_ENTRIES", _int(0), default=0)
    dlq_max_age_seconds: float = _env("LIMECHAT_DLQ_MAX_AGE_SECONDS", _float(), default=0.0)
    sentry_dsn: str = _env("SENTRY_DSN", default="", repr=False)
    sentry_environment: str = _env("SENTRY_ENVIRONMENT", default="")
    #: Celery's remote control (``celery inspect``, ``status``, Flower): ``on`` or ``off``
    remote_control: str = _env("LIMECHAT_REMOTE_CONTROL", _on_off, default="on")
    #: the accounts read from ``accounts_file`` (None: the single account of the credentials)
    accounts: Accounts | None = field(default=None, compare=False)

    @property
    def remote_control_on(self) -> bool:
        return self.remote_control == "on"

    @property
    def rate(self) -> Rate | None:
        """The parsed rate limit, or None when it is off."""
        return parse_rate(self.rate_limit, self.rate_burst)

    def account_set(self) -> Accounts:
        """The accounts this worker delivers for (the file's, or the single account's)."""
        if self.accounts is not None:
            return self.accounts
        return accounts_.single(
            self.access_token, self.account_id, self.rate_limit, self.rate_burst
        )

    def load_accounts(self, environ: Mapping[str, str], *, need_tokens: bool = True) -> Accounts:
        """Read ``accounts_file`` (again, for a reload); :class:`ConfigError` if refused."""
        return accounts_.load(
            self.accounts_file,
            environ,
            rate_limit=self.rate_limit,
            burst=self.rate_burst,
            need_tokens=need_tokens,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, need_credentials: bool = True) -> Settings:
        """Parse the environment; :class:`ConfigError` names every missing credential.

        ``need_credentials=False`` checks every other variable (for ``ping``): the missing
        credentials are then empty, and such settings cannot run a worker.
        """
        check_accounts_source(environ)
        missing = missing_credentials(environ)
        if missing and need_credentials:
            raise ConfigError(
                f"missing {' and '.join(missing)}: the worker needs LimeChat credentials "
                f"or {accounts_.ACCOUNTS_FILE} (see README, 'Configuration'; "
                "`limechat-events up` runs against the local sandbox without them)"
            )
        values = read_fields(environ)
        for name, key in (
            ("LIMECHAT_ACCESS_TOKEN", "access_token"),
            ("LIMECHAT_ACCOUNT_ID", "account_id"),
        ):
            if values[key] and (problem := accounts_.header_problem(values[key])):
                raise ConfigError(f"{name} {problem}")
        base, cap = values["retry_base_seconds"], values["retry_max_seconds"]
        if cap < base:
            raise ConfigError(
                f"LIMECHAT_RETRY_MAX_SECONDS ({cap:g}) must not be below "
                f"LIMECHAT_RETRY_BASE_SECONDS ({base:g})"
            )
        parse_rate(values["rate_limit"], values["rate_burst"])  # refuse a bad one, named
        values["processes"] = values["processes"] or available_cpus()
        settings = cls(**values)
        if settings.accounts_file:
            found = settings.load_accounts(environ, need_tokens=need_credentials)
            settings = replace(settings, accounts=found)
        return settings


def read_fields(environ: Mapping[str, str], names: Iterable[str] | None = None) -> dict[str, Any]:
    """Field name -> value for the declared fields of :class:`Settings` (``names``: a few)."""
    wanted = None if names is None else set(names)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if "env" not in f.metadata or (wanted is not None and f.name not in wanted):
            continue
        default = "" if f.default is MISSING else f.default
        values[f.name] = f.metadata["read"](environ, f.metadata["env"], default)
    return values


def check_accounts_source(environ: Mapping[str, str]) -> None:
    """One source of accounts: the file, or the single-account variables; never both."""
    if not environ.get(accounts_.ACCOUNTS_FILE, "").strip():
        return
    also = [n for n in accounts_.SINGLE_ACCOUNT_VARIABLES if environ.get(n, "").strip()]
    if also:
        raise ConfigError(
            f"{accounts_.ACCOUNTS_FILE} and {' and '.join(also)} are both set: use the "
            "accounts file alone (put that account in it), or the single-account variables"
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
    #: the accounts of LIMECHAT_ACCOUNTS_FILE, read without their tokens (None: no file)
    accounts: Accounts | None = field(default=None, compare=False)

    @property
    def rate(self) -> Rate | None:
        return parse_rate(self.rate_limit, self.rate_burst)

    @property
    def account_ids(self) -> list[str]:
        """Every account configured: the file's, or LIMECHAT_ACCOUNT_ID's (if set)."""
        if self.accounts is not None:
            return self.accounts.ids
        return [self.account_id] if self.account_id else []

    def rate_of(self, account: str) -> Rate | None:
        """The rate limit of ``account`` (its own in the file, else the variables')."""
        if self.accounts is not None and account in self.accounts.by_id:
            return self.accounts.by_id[account].rate
        return self.rate

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorSettings:
        """Parse the shared variables; :class:`ConfigError` names the bad one."""
        check_accounts_source(environ)
        shared = ("redis_url", "rate_limit", "rate_burst", "batch_size", "accounts_file")
        values = read_fields(environ, shared)
        parse_rate(values["rate_limit"], values["rate_burst"])  # refuse a bad value, named
        path = values.pop("accounts_file")
        found = None
        if path:
            found = accounts_.load(
                path,
                environ,
                rate_limit=values["rate_limit"],
                burst=values["rate_burst"],
                need_tokens=False,
            )
        return cls(
            account_id=environ.get("LIMECHAT_ACCOUNT_ID", "").strip() or None,
            accounts=found,
            **values,
        )


def missing_credentials(environ: Mapping[str, str]) -> list[str]:
    """The LimeChat credentials a worker needs that ``environ`` lacks (none with a file)."""
    if environ.get(accounts_.ACCOUNTS_FILE, "").strip():
        return []
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
    return {f.metadata["env"]: d.get(f.name) for f in fields(Settings) if "env" in f.metadata}
