"""Who may see the console: HTTP Basic by default, or a host application's own check.

An *authorize* hook takes the request and returns the user's name (let in), ``None``
(refused: 401 with a Basic challenge when the policy is Basic, else 403), or a response to
send as it is (a host application's redirect to its login page).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Request, Response

from producer.errors import ConfigError

Authorize = Callable[[Request], "str | Response | None"]

_REALM = 'Basic realm="limechat-events console", charset="UTF-8"'


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic against one user and password (compared in constant time)."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.password:
            raise ConfigError("LIMECHAT_WEB_PASSWORD is empty: Basic auth needs a password")

    def __call__(self, request: Request) -> str | Response | None:
        given = request.authorization
        if given is None or given.type != "basic":
            return None
        # (both compared, always: which one was wrong takes no more time to find out)
        user_ok = hmac.compare_digest((given.username or "").encode(), self.user.encode())
        password_ok = hmac.compare_digest((given.password or "").encode(), self.password.encode())
        return self.user if user_ok and password_ok else None

    def challenge(self) -> Response:
        return Response(
            "Log in with LIMECHAT_WEB_USER and LIMECHAT_WEB_PASSWORD.\n",
            401,
            {"WWW-Authenticate": _REALM, "Content-Type": "text/plain; charset=utf-8"},
        )


def loopback_only(request: Request) -> str | None:
    """No password: let in requests from this machine only (a console bound to loopback).

    The Host must name loopback too: a page the operator opens elsewhere could rebind its own
    name to 127.0.0.1 (DNS rebinding), and its requests would then come from this machine.
    """
    local = is_loopback(request.remote_addr or "") and is_loopback(_hostname(request.host))
    return "local" if local else None


def _hostname(host: str) -> str:
    """``host`` of a Host header without its port (``[::1]:8780`` -> ``::1``)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_can_serve(host: str, password: str) -> str | None:
    """Why the console must not start on ``host`` (None: it may); a note for a loopback
    console without a password is the caller's to print."""
    if password or is_loopback(host):
        return None
    return (
        f"LIMECHAT_WEB_PASSWORD is not set: the console serves only on loopback without one "
        f"(asked for --host {host}); set LIMECHAT_WEB_PASSWORD or use --host 127.0.0.1"
    )
