"""``web``: serve the console; and the console ``up`` starts beside its worker."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from producer.errors import ConfigError

from .common import fail, operations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8780


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
def web(host: str, port: int) -> None:
    """Serve the web console: overview, dead letters, retries, /metrics.

    Every page needs HTTP Basic (LIMECHAT_WEB_USER, default admin, and LIMECHAT_WEB_PASSWORD)
    but /healthz. Without a password it serves on loopback only, to this machine only.
    """
    from ..console import serve

    app = build(host)
    try:
        running = serve.server(app, host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
    click.echo(f"console: {serve.url(running, host)}", err=False)
    sys.stdout.flush()

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        running.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        running.server_close()


def build(host: str) -> Any:
    """The console for ``host``; refuses (exit 2) a password-less one off loopback."""
    from ..console import create_app
    from ..console.auth import check_can_serve, loopback_only
    from ..console.settings import ConsoleSettings

    try:
        settings = ConsoleSettings.from_env(os.environ)
    except ConfigError as exc:
        fail(str(exc), 2)
    problem = check_can_serve(host, settings.password)
    if problem:
        fail(problem, 2)
    if not settings.password:
        click.echo(
            "note: LIMECHAT_WEB_PASSWORD is not set: the console asks no password and "
            "answers only requests from this machine (it is bound to loopback)",
            err=True,
        )
    return create_app(operations(), settings, None if settings.password else loopback_only)


def start_beside(port: int) -> None:
    """``up``: the console on loopback in a thread of this process, its URL printed."""
    from ..console import serve

    try:
        running = serve.in_thread(build(DEFAULT_HOST), DEFAULT_HOST, port)
    except OSError as exc:
        click.echo(f"console not started: port {port}: {exc.strerror or exc}", err=True)
        return
    click.echo(f"console: {serve.url(running, DEFAULT_HOST)}")
    sys.stdout.flush()
