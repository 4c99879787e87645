"""What an operation raises besides bad settings (``ConfigError``) and bad filters
(``SelectionError``): every face maps these to its own answer (an exit code, an HTTP status)."""

from __future__ import annotations


class OperationError(Exception):
    """An operation that could not be done; the message is safe to show (no secrets)."""


class StoreError(OperationError):
    """Redis failed or did not answer. The message names Redis' URL with passwords hidden."""


class ImportRefused(OperationError):
    """A file to import had bad lines; nothing was queued.

    ``problems`` are the messages to show (the first ones, then how many more), ``count``
    how many lines were bad, ``source`` the file's name.
    """

    def __init__(self, source: str, count: int, problems: list[str]) -> None:
        super().__init__(f"{count} bad line(s) in {source}; nothing was imported")
        self.source = source
        self.count = count
        self.problems = problems
