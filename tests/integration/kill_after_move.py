"""A real worker killed (SIGKILL) the moment it has moved waiting messages behind the one it
took into its taking list, before recording them: the worst instant for coalescing.

``python -m tests.integration.kill_after_move`` runs ``limechat-events worker`` unchanged,
except that the first take that coalesces kills the process before the record is written.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from worker.cli import main
from worker.transport import Channel

_coalesced = Channel._coalesced


def _killed(self: Channel, *args: Any) -> Any:
    message, (taken, put_back) = _coalesced(self, *args)
    if taken > 1:
        print(f"killed after moving {taken} messages", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return message, (taken, put_back)


if __name__ == "__main__":
    Channel._coalesced = _killed  # type: ignore[method-assign]
    main(["worker"])
