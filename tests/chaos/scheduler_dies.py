"""A real worker whose scheduler thread dies a few rounds after it starts.

``python -m tests.chaos.scheduler_dies`` runs ``limechat-events worker`` unchanged, except that
its scheduler's fourth round raises a ``BaseException`` (which no ``except Exception`` stops):
the thread ends. Without its scheduler a worker would deliver on while every retry stalled.
"""

from __future__ import annotations

from worker import schedule
from worker.cli import main

_rounds = 0
_run_chores = schedule.Promoter._run_chores


class Killed(BaseException):
    """What kills the thread (as a bug in the handling of the errors themselves might)."""


def _dies_on_the_fourth_round(self: schedule.Promoter) -> None:
    global _rounds
    _rounds += 1
    if _rounds == 4:
        raise Killed("the scheduler thread is killed by the test")
    _run_chores(self)


if __name__ == "__main__":
    schedule.Promoter._run_chores = _dies_on_the_fourth_round  # type: ignore[method-assign]
    main(["worker"])
