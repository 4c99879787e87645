"""``limechat-events``: run a worker, send events, run the sandbox, inspect and replay the DLQ.

One module per concern: ``run`` (worker, up, sandbox), ``send``, ``dlq``, ``inspect`` (stats,
retries, ping), ``web`` (the console), ``outbox`` (the SQLAlchemy outbox's relay); ``render``
draws tables and times, ``common`` maps errors to exit codes. The commands call
:mod:`worker.operations`, which the web console calls too.
"""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="limechat-events")
def main() -> None:
    """Deliver Custom Events to LimeChat reliably: a Redis queue, Celery workers, retries with
    backoff, and a dead-letter queue you can inspect and replay.

    Configuration comes from the environment (REDIS_URL, LIMECHAT_ACCESS_TOKEN,
    LIMECHAT_ACCOUNT_ID, ...); see the README for every variable and its default.
    """


# The commands, in the order `--help` lists them (click sorts them by name anyway).
from . import dlq, inspect, outbox, run, send, web  # noqa: E402

main.add_command(run.worker)
main.add_command(send.send)
main.add_command(run.sandbox)
main.add_command(run.up)
main.add_command(dlq.dlq)
main.add_command(inspect.stats)
main.add_command(inspect.retries)
main.add_command(inspect.ping)
main.add_command(web.web)
main.add_command(outbox.outbox_relay)

__all__ = ["main"]
