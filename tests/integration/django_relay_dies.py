"""The outbox relay, killed (SIGKILL, by itself) right after its first enqueue to Redis.

That is the worst moment: the events are on the queue, the rows not yet deleted, so the next
relay sends them again. ``python -m tests.integration.django_relay_dies [relay options]``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "django_shop"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_project.settings")


def main() -> None:
    from django.core.management import execute_from_command_line

    from producer.django import relay

    enqueue = relay.relay_envelopes

    def enqueue_then_die(*args: Any) -> None:
        enqueue(*args)
        if args[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    relay.relay_envelopes = enqueue_then_die  # type: ignore[assignment]
    execute_from_command_line(["manage.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()
