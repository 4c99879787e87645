"""``worker``, ``up`` and ``sandbox``: the long-running commands, and their exit codes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import click

from producer import contract
from producer.errors import ConfigError

from .common import fail

PROCESSES_HELP = "Worker processes [default: LIMECHAT_WORKER_PROCESSES or one per CPU available]."


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Threads delivering events, per process [default: LIMECHAT_WORKER_CONCURRENCY or 16].",
)
@click.option("--processes", type=click.IntRange(min=1), help=PROCESSES_HELP)
def worker(concurrency: int | None, processes: int | None) -> None:
    """Run a worker: deliver queued events to LimeChat and promote parked retries.

    Needs LIMECHAT_ACCESS_TOKEN and LIMECHAT_ACCOUNT_ID, or LIMECHAT_ACCOUNTS_FILE for several
    accounts (refuses to start without them); SIGHUP re-reads the accounts file.
    Runs one process per CPU (a Python process delivers on one core), each with its threads;
    the processes share the queue, the rate limit and the retries through Redis.
    Stop it with SIGTERM or Ctrl-C: running deliveries finish, unstarted ones stay queued.
    """
    from ..settings import Settings

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        fail(str(exc), 2)
    run_workers(settings, concurrency, processes)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", help="Accept only this x-limechat-uat [default: any non-empty].")
@click.option("--account", help="Accept only this x-fb-account-id [default: any non-empty].")
def sandbox(host: str, port: int, token: str | None, account: str | None) -> None:
    """Run a local stand-in for LimeChat's endpoint that checks and prints what it receives.

    Point a worker at it with LIMECHAT_API_URL=http://127.0.0.1:8765/api/v1/cvf-events.
    """
    from ..sandbox import main as serve

    serve(host, port, token, account)


@click.command()
@click.option(
    "--sandbox-port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the sandbox started when no credentials are set.",
)
@click.option("--processes", type=click.IntRange(min=1), help=PROCESSES_HELP)
@click.option(
    "--web-port",
    default=8780,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the web console, on loopback.",
)
@click.option("--no-web", is_flag=True, help="Do not start the web console.")
def up(sandbox_port: int, processes: int | None, web_port: int, no_web: bool) -> None:
    """Development: start Redis if none answers, the sandbox if no credentials, a worker, and
    the web console on loopback."""
    from ..devrun import bring_up

    try:
        settings = bring_up(sandbox_port)
    except ConfigError as exc:
        fail(str(exc), 2)
    if not no_web:
        from .web import start_beside

        start_beside(web_port)
    run_workers(settings, None, processes)


def run_workers(settings: Any, concurrency: int | None, processes: int | None) -> None:
    """One worker in this process, or a supervisor of several (``--processes``)."""
    # Until Celery (or the supervisor) installs its own handlers nothing has been taken: a
    # SIGTERM (a deploy) or a Ctrl-C is a clean stop, not death by signal (143) or "Aborted!".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_before_start)
    # A reload asked for before the worker can do one would kill it (SIGHUP's default): the
    # accounts are being read now anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    count = processes or settings.processes  # (settings resolve "one per CPU")
    if count == 1:
        run_worker(settings, concurrency)
        return
    from ..logs import configure as configure_logging
    from ..supervisor import supervise

    configure_logging(settings.log_level, settings.log_format)
    raise SystemExit(supervise(count, concurrency))


def _stop_before_start(signum: int, frame: Any) -> None:
    """Exit 0 at once. (Not ``sys.exit``: a handler may run inside a weakref callback or a
    ``__del__``, where Python prints the SystemExit and ignores it, and the start went on.)"""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (it may have interrupted a write to it)
            stream.flush()
    os._exit(0)


def run_worker(settings: Any, concurrency: int | None = None) -> None:
    from celery import signals

    from ..app import check_server, create_app
    from ..logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        check_server(settings.redis_url)
    except ConfigError as exc:
        fail(str(exc), 2)
    fatal: list[int] = []  # 1 if the worker stopped itself because its scheduler died
    app = create_app(settings, on_fatal=lambda: fatal.append(1))
    stopped: list[Any] = []  # the worker, as its shutdown signal names it
    asked: list[str] = []  # the shutdowns signals asked for: "Warm" or "Cold"

    def remember(sender: Any, **_: Any) -> None:
        stopped.append(sender)

    def remember_asked(how: Any = "Warm", **_: Any) -> None:
        asked.append(str(how))

    signals.worker_shutdown.connect(remember, weak=False)
    signals.worker_shutting_down.connect(remember_asked, weak=False)
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency or settings.concurrency}",
            f"--queues={contract.QUEUE}",
            f"--loglevel={settings.log_level}",
            "--hostname=limechat-events@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    raise SystemExit(exit_code(stopped, asked, fatal))


def exit_code(stopped: list[Any], asked: list[str], fatal: list[int]) -> int:
    """0 for a stop a signal asked for (SIGTERM, Ctrl-C), 1 for a cold one or a failure.

    worker_main drops the worker's exit code: one that died of an unrecoverable error would
    exit 0, and a supervisor restarting on failure would leave it dead. Celery announces a
    failure for Ctrl-C, which is a warm stop like SIGTERM here.
    """
    if fatal or "Cold" in asked:
        return 1
    if asked:
        return 0
    return int(getattr(stopped[-1], "exitcode", 0) or 0) if stopped else 0
