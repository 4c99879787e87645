"""The LimeChat accounts a worker delivers for: one from the single-account variables, or
several from ``LIMECHAT_ACCOUNTS_FILE`` (TOML).

Tokens live here only, in the worker's memory: an :class:`Account`'s repr hides its token, and
no error built here ever quotes one. Operator tools read the same file without needing the
tokens (``need_tokens=False``): they want the ids and rates.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from producer import contract
from producer.errors import ConfigError

from .ratelimit import Rate, parse_rate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover (Python 3.10)
    import tomli as tomllib

ACCOUNTS_FILE = "LIMECHAT_ACCOUNTS_FILE"
#: The single-account variables, which the accounts file replaces.
SINGLE_ACCOUNT_VARIABLES = ("LIMECHAT_ACCESS_TOKEN", "LIMECHAT_ACCOUNT_ID")
_KEYS = {"id", "token", "token_env", "token_file", "rate_limit", "burst"}
_HEADER = re.compile(r"^\s*\[\[\s*accounts\s*\]\]")


@dataclass(frozen=True)
class Account:
    """One LimeChat account: its id (``x-fb-account-id``), token and rate limit."""

    id: str
    token: str = field(repr=False)
    rate_limit: str
    burst: int

    @property
    def rate(self) -> Rate | None:
        return parse_rate(self.rate_limit, self.burst)


@dataclass(frozen=True)
class Accounts:
    """Every account a worker knows, and the one ``account=None`` means."""

    by_id: Mapping[str, Account]
    default: str | None = None
    #: where they came from, for messages: the file, or the single-account variables
    source: str = "LIMECHAT_ACCOUNT_ID"

    def __repr__(self) -> str:  # (ids only; Account's repr hides the tokens anyway)
        return f"Accounts({sorted(self.by_id)!r}, default={self.default!r})"

    @property
    def ids(self) -> list[str]:
        return sorted(self.by_id)

    def resolve(self, named: str | None) -> Account | None:
        """The account an event's ``account`` field means, or None if this worker has none."""
        key = self.default if named is None else named
        return None if key is None else self.by_id.get(key)

    def unknown(self, named: str | None) -> str:
        """Why an event naming ``named`` has no account here (for its dead letter)."""
        if named is None:
            return f"the event names no account and {self.source} sets no default_account"
        return f"account {named!r} is not configured ({self.source})"

    def tokens(self) -> list[str]:
        return [a.token for a in self.by_id.values() if a.token]


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot go out as an HTTP header value (None: it can); never quotes it.

    A token or an id with a control character (a CR/LF pasted with it), a space or a
    non-ASCII letter would be refused by http.client at every request, in an error message
    that quotes the token; refusing it here keeps it out of dead letters and logs.
    """
    if all("!" <= c <= "~" for c in value):
        return None
    return "must be visible ASCII characters only (no spaces, control characters or non-ASCII)"


def single(token: str, account_id: str, rate_limit: str, burst: int) -> Accounts:
    """The simple case: ``LIMECHAT_ACCESS_TOKEN`` and ``LIMECHAT_ACCOUNT_ID``."""
    account = Account(account_id, token, rate_limit, burst)
    return Accounts({account_id: account}, account_id, "LIMECHAT_ACCOUNT_ID")


def load(
    path: str,
    environ: Mapping[str, str],
    *,
    rate_limit: str,
    burst: int,
    need_tokens: bool = True,
) -> Accounts:
    """Read an accounts file; :class:`ConfigError` names the file, the line and what is wrong.

    ``rate_limit`` and ``burst`` are the defaults of accounts that set none (the values of
    ``LIMECHAT_RATE_LIMIT`` and ``LIMECHAT_RATE_BURST``).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{ACCOUNTS_FILE}={path!r} cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # (tomllib's message says "(at line N, column M)"; it never quotes the value)
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    return parse(doc, text, path, environ, rate_limit=rate_limit, burst=burst, need=need_tokens)


def parse(
    doc: dict[str, Any],
    text: str,
    path: str,
    environ: Mapping[str, str],
    *,
    rate_limit: str,
    burst: int,
    need: bool = True,
) -> Accounts:
    """The accounts of a parsed file (``text`` is its source, to name lines)."""
    extra = sorted(set(doc) - {"accounts", "default_account"})
    if extra:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(extra)}")
    tables = doc.get("accounts")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no accounts (add one [[accounts]] table per account)")
    lines = [n for n, line in enumerate(text.splitlines(), 1) if _HEADER.match(line)]
    by_id: dict[str, Account] = {}
    first_line: dict[str, int | None] = {}
    for index, table in enumerate(tables):
        line = lines[index] if index < len(lines) and len(lines) == len(tables) else None
        where = f"{path}, line {line}" if line else f"{path}, account #{index + 1}"
        account = _account(table, where, environ, rate_limit, burst, need)
        if account.id in by_id:
            earlier = first_line[account.id]
            also = f" (first at line {earlier})" if earlier else ""
            raise ConfigError(f"{where}: duplicate account id {account.id!r}{also}")
        by_id[account.id] = account
        first_line[account.id] = line
    default = doc.get("default_account")
    if default is not None:
        if not isinstance(default, str) or default not in by_id:
            raise ConfigError(
                f"{path}: default_account {default!r} is not one of the accounts "
                f"({', '.join(sorted(by_id))})"
            )
    elif len(by_id) == 1:
        default = next(iter(by_id))  # (one account: it is the one account=None means)
    return Accounts(by_id, default, path)


def _account(
    table: object,
    where: str,
    environ: Mapping[str, str],
    rate_limit: str,
    burst: int,
    need: bool,
) -> Account:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: an account must be a table ([[accounts]])")
    extra = sorted(set(table) - _KEYS)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")
    account_id = table.get("id")
    if not isinstance(account_id, str) or not account_id.strip():
        raise ConfigError(f"{where}: missing id (the x-fb-account-id, a non-empty string)")
    account_id = account_id.strip()
    if len(account_id) > contract.ACCOUNT_MAX_LENGTH:
        raise ConfigError(f"{where}: id is longer than {contract.ACCOUNT_MAX_LENGTH} characters")
    if problem := header_problem(account_id):
        raise ConfigError(f"{where}: id {problem}")
    token = _token(table, where, account_id, environ, need)
    if problem := header_problem(token) if token else None:
        raise ConfigError(f"{where}: account {account_id!r}: token {problem}")
    rate = table.get("rate_limit", rate_limit)
    own_burst = table.get("burst", burst)
    if not isinstance(rate, str):
        raise ConfigError(f'{where}: rate_limit must be a string like "10/s" (or "off")')
    if not isinstance(own_burst, int) or isinstance(own_burst, bool):
        raise ConfigError(f"{where}: burst must be a whole number")
    if own_burst < 1:
        raise ConfigError(f"{where}: burst={own_burst} must be at least 1")
    parse_rate(rate, own_burst, variable=f"{where}: rate_limit")
    return Account(account_id, token, rate, own_burst)


def _token(
    table: dict[str, Any], where: str, account_id: str, environ: Mapping[str, str], need: bool
) -> str:
    """The inline ``token``, the variable ``token_env`` names, or the contents of the file
    ``token_file`` names (read again on every reload: how mounted secrets rotate); errors
    never quote a token."""
    given = [k for k in ("token", "token_env", "token_file") if table.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(f"{where}: account {account_id!r} sets {' and '.join(given)}: set one")
    if not given:
        if need:
            raise ConfigError(
                f"{where}: account {account_id!r} has no token (token, token_env or token_file)"
            )
        return ""
    key = given[0]
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        what = {
            "token": "token must be a non-empty string",
            "token_env": "token_env must name an environment variable",
            "token_file": "token_file must be a file's path",
        }[key]
        raise ConfigError(f"{where}: account {account_id!r}: {what}")
    if key == "token":
        return value.strip()
    if key == "token_env":
        name = value.strip()
        token = environ.get(name, "").strip()
        if not token and need:
            raise ConfigError(
                f"{where}: account {account_id!r}: token_env names {name}, which is not set"
            )
        return token
    return _token_from_file(value.strip(), where, account_id, need)


def _token_from_file(path: str, where: str, account_id: str, need: bool) -> str:
    if not need:
        return ""  # (operator tools want ids and rates; they may not be allowed to read it)
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except OSError as exc:
        raise ConfigError(
            f"{where}: account {account_id!r}: token_file {path!r} cannot be read: {exc.strerror}"
        ) from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = ""
    if not token:
        raise ConfigError(
            f"{where}: account {account_id!r}: token_file {path!r} holds no token (UTF-8 text)"
        )
    return token
