"""The web console: overview, dead letters, retries and metrics over :mod:`worker.operations`.

``create_app(ops, settings, authorize)`` builds the WSGI application (Flask); ``limechat-events
web`` serves it. Nothing in ``producer`` imports it: a web app that only sends events never
loads Flask.
"""

from __future__ import annotations

from .app import create_app
from .auth import Authorize, BasicAuth
from .settings import ConsoleSettings

__all__ = ["Authorize", "BasicAuth", "ConsoleSettings", "create_app"]
