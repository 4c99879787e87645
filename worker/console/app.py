"""The console as a WSGI application: :func:`create_app` builds it, mountable anywhere.

Every request but ``/healthz`` passes the ``authorize`` hook; every POST carries a CSRF
token; every answer carries a Content-Security-Policy that allows no inline script and
nothing from another origin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from flask import Flask, Response, g, render_template, request

from producer.errors import ConfigError

from ..operations import Ops
from .auth import Authorize, BasicAuth
from .csrf import FIELD, Csrf
from .settings import ConsoleSettings

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
OPEN = frozenset({"console.healthz"})


@dataclass
class Console:
    """What the views need, kept on the app (``app.extensions['limechat_console']``)."""

    ops: Ops
    csrf: Csrf
    authorize: Authorize


def create_app(
    ops: Ops | None = None,
    settings: ConsoleSettings | None = None,
    authorize: Authorize | None = None,
) -> Flask:
    """The console. ``ops`` and ``settings`` default to the environment's.

    ``authorize`` (a request -> user name, None or a response) replaces HTTP Basic, so a
    host application can put the console behind its own login; without it the console
    needs ``LIMECHAT_WEB_PASSWORD`` (:class:`ConfigError` otherwise).
    """
    ops = ops if ops is not None else Ops.from_env(os.environ)
    settings = settings if settings is not None else ConsoleSettings.from_env(os.environ)
    if authorize is None:
        if not settings.password:
            raise ConfigError(
                "LIMECHAT_WEB_PASSWORD is not set: the console needs a password for HTTP Basic, "
                "or an authorize hook from the application that mounts it"
            )
        authorize = BasicAuth(settings.user, settings.password)
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.extensions["limechat_console"] = Console(ops, Csrf(settings.secret), authorize)

    from .views import pages

    app.register_blueprint(pages)
    app.before_request(_guard)
    app.after_request(_headers)
    app.context_processor(lambda: {"csrf_field": FIELD, "csrf_token": _token()})
    return app


def console() -> Console:
    from flask import current_app

    found: Console = current_app.extensions["limechat_console"]
    return found


def _guard() -> Response | None:
    if request.endpoint in OPEN:
        return None
    state = console()
    user = state.authorize(request)
    if isinstance(user, Response):
        return user
    if user is None:
        if isinstance(state.authorize, BasicAuth):
            return state.authorize.challenge()
        return Response("Forbidden\n", 403, mimetype="text/plain")
    g.user = user
    if request.method == "POST":
        problem = state.csrf.problem(request, user)
        if problem is not None:
            return _refused(problem)
    return None


def _refused(problem: str) -> Response:
    return Response(render_template("error.html", title="Refused", message=problem), 403)


def _token() -> str:
    user = g.get("user")
    return console().csrf.token(user) if user else ""


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response
