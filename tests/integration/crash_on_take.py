"""A real worker whose consumer crashes on the first message it takes (an unrecoverable error).

``python -m tests.integration.crash_on_take`` runs ``limechat-events worker`` unchanged, except
that reading the first reply of its blocking pop raises: Celery logs "Unrecoverable error" and
stops (reading the reply again as it closes, which then works).
"""

from __future__ import annotations

from typing import Any

from worker.cli import main
from worker.transport import Channel

_read = Channel._brpop_read
_crashed: list[bool] = []


def _crash_once(self: Channel, **options: Any) -> bool:
    if not _crashed:
        _crashed.append(True)
        raise RuntimeError("injected: the consumer cannot go on")
    return _read(self, **options)


if __name__ == "__main__":
    Channel._brpop_read = _crash_once  # type: ignore[method-assign]
    main(["worker"])
