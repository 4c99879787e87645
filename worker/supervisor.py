"""``limechat-events worker --processes N``: N worker processes under one command.

One Python process delivers on one core (its threads share the GIL); on 2 cores two processes
deliver about 1.4x what one does (docs/benchmarks.md). Each child is an ordinary
``limechat-events worker --processes 1``, exactly as if started on its own: the queue, the
rate limit and the retry schedule are shared through Redis. The parent only starts them,
passes stop signals (and SIGHUP, a reload) on, and replaces a child that dies; the children
share its process group, so a signal to the group (Ctrl-C, ``kill -- -PGID``) reaches them too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("limechat_events.supervisor")

#: A child that fails within this many seconds of starting failed to start (a bad setting,
#: Redis refusing the password): the others are stopped and the command exits with its code.
STARTUP_SECONDS = 10.0
#: A child that dies later is replaced, but not more often than this.
RESTART_SPACING_SECONDS = 1.0
#: Signals that stop the workers: SIGTERM and SIGINT a warm shutdown (deliveries in flight
#: finish), SIGQUIT Celery's cold one.
_FORWARDED = {
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGINT: signal.SIGTERM,
    signal.SIGQUIT: signal.SIGQUIT,
}
_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    slot: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Run ``processes`` copies of ``command`` until told to stop; returns the exit code."""

    def __init__(self, command: list[str], processes: int) -> None:
        self.command = command
        self.processes = processes
        self.children: dict[int, Child] = {}
        self.stopping = False
        #: the signal a stop passed on to the children (None until one came)
        self.stop_signal: signal.Signals | None = None
        self.poll_interval = 0.2

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _FORWARDED}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        try:
            for slot in range(self.processes):
                if self.stopping:
                    break
                self._start(slot)
            log.info("started %d worker processes", len(self.children))
            code = self._watch()
            return self._wait_all(code)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, slot: int) -> None:
        proc = subprocess.Popen(self.command, preexec_fn=_die_with_parent)
        self.children[slot] = Child(slot, proc)
        if self.stop_signal is not None:
            # The stop came while it was being started, before it was in self.children: the
            # signal passed on missed it, and it would run on while the others stopped.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.stop_signal = _FORWARDED[signal.Signals(signum)]
        self._send(self.stop_signal)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        # Each child re-reads the accounts file (worker/reload.py); nothing stops.
        log.info("SIGHUP: passing it on to %d worker processes", len(self.children))
        self._send(signal.SIGHUP)

    def _send(self, sig: signal.Signals) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)

    def _watch(self) -> int:
        """Until a stop signal: replace children that die; 0, or the code of a failed start."""
        while not self.stopping:
            for child in list(self.children.values()):
                code = child.proc.poll()
                if code is None or self.stopping:
                    continue
                lived = time.monotonic() - child.started
                if code != 0 and lived < STARTUP_SECONDS:
                    log.error(
                        "worker process %d exited with code %d %.1f s after it started;"
                        " stopping the others",
                        child.proc.pid,
                        code,
                        lived,
                    )
                    self.stopping = True
                    self._send(signal.SIGTERM)
                    return _exit_code(code)
                log.warning(
                    "worker process %d exited with code %d after %.0f s; starting another",
                    child.proc.pid,
                    code,
                    lived,
                )
                time.sleep(max(0.0, RESTART_SPACING_SECONDS - lived))
                if not self.stopping:
                    self._start(child.slot)
            time.sleep(self.poll_interval)
        return 0

    def _wait_all(self, code: int) -> int:
        for child in self.children.values():
            child_code = child.proc.wait()
            if self.stopping and child_code == -signal.SIGTERM:
                # Stopped by the SIGTERM we passed on before it could take anything (still
                # starting, its handlers not installed yet): a clean stop, not a failure.
                child_code = 0
            if not code and child_code:
                code = _exit_code(child_code)
        return code


def _exit_code(returncode: int) -> int:
    """A child's return code as an exit code: killed by signal N is 128 + N, as in a shell."""
    return 128 - returncode if returncode < 0 else returncode


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if the supervisor dies (Linux), so none is orphaned.

    SIGHUP starts ignored (an ignored signal stays ignored across exec): a reload passed on
    before the child can reload would otherwise kill it, and look like a failed start that
    stops every process. The child reads the accounts file as it starts anyway.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_command(concurrency: int | None) -> list[str]:
    """The command line of one child: this worker, as a single process."""
    command = [sys.executable, "-m", "worker", "worker", "--processes", "1"]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    return command


def supervise(processes: int, concurrency: int | None) -> int:
    """Run ``processes`` single-process workers; the exit code for the command."""
    return Supervisor(child_command(concurrency), processes).run()
