"""A real worker whose scheduler stops dead between claiming parked retries and publishing them.

``python -m tests.chaos.hang_before_publish`` runs ``limechat-events worker`` unchanged, except
that the first time its scheduler has claimed due retries it says so on stderr and then waits
forever instead of publishing them: the window a SIGKILL must not lose anything in.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

from producer import contract
from worker import requeue
from worker.cli import main

CLAIMED = "chaos: scheduler claimed"

_publish = requeue.Requeuer.__call__


def _hang_after_claim(self: requeue.Requeuer, ids: Sequence[str], messages: Sequence[str]) -> bool:
    if self._keys[0] == contract.RETRY_CLAIMED:
        # Celery redirects sys.stdout into its logger; write to the real stream.
        print(
            f"{CLAIMED} {len(ids)} parked retries; hanging before the publish",
            file=sys.__stderr__,
            flush=True,
        )
        threading.Event().wait()
    return _publish(self, ids, messages)


if __name__ == "__main__":
    requeue.Requeuer.__call__ = _hang_after_claim  # type: ignore[method-assign]
    main(["worker"])
