"""The supervisor over stand-in children, for test_supervisor.py (real processes, no Celery).

    python -m tests.integration.supervised STARTUP_SECONDS PROCESSES FAIL_ONCE_FILE
    python -m tests.integration.supervised child FAIL_ONCE_FILE

A child prints ``child ready <pid>`` and sleeps until SIGTERM (then exits 0, as a worker
does). The first child to create FAIL_ONCE_FILE exits 3 at once instead ("-": none does).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType


def child(fail_once: str) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    if fail_once != "-":
        try:
            os.close(os.open(fail_once, os.O_CREAT | os.O_EXCL))
            sys.exit(3)
        except FileExistsError:
            pass
    print(f"child ready {os.getpid()}", flush=True)
    while True:
        time.sleep(1)


def main() -> None:
    if sys.argv[1] == "child":
        child(sys.argv[2])
        return
    from worker import supervisor
    from worker.logs import configure

    configure("INFO")
    supervisor.STARTUP_SECONDS = float(sys.argv[1])
    command = [sys.executable, "-m", "tests.integration.supervised", "child", sys.argv[3]]
    raise SystemExit(supervisor.Supervisor(command, int(sys.argv[2])).run())


if __name__ == "__main__":
    main()
