"""Reading events from a JSON-lines file (``send --file``, ``dlq import``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Bad lines described one by one; past this they are only counted (a 100 MB file of junk
#: must not become 100 MB of error messages).
MAX_REPORTED_ERRORS = 20


@dataclass
class ParsedLines:
    """The events of a file, the line each came from, and what was wrong with the others."""

    items: list[Any] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    #: the first :data:`MAX_REPORTED_ERRORS` problems; ``error_count`` counts them all
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(message)

    def report(self) -> list[str]:
        """The messages to print: the first ones, and how many more there were."""
        more = self.error_count - len(self.errors)
        return self.errors + ([f"... and {more} more bad line(s)"] if more else [])


def parse_json_lines(lines: Iterable[bytes], source: str) -> ParsedLines:
    """Parse each non-blank line as one JSON value; errors name the line and the column."""
    parsed = ParsedLines()
    for number, raw in enumerate(lines, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark, as some editors write
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            parsed.add_error(
                f"{source} line {number}: not UTF-8 text (byte {exc.start + 1}); "
                "is this a binary file?"
            )
            continue
        if not text.strip():
            continue
        try:
            parsed.items.append(json.loads(text))
        except json.JSONDecodeError as exc:
            parsed.add_error(describe_json_error(exc, f"{source} line {number}"))
            continue
        except RecursionError:
            parsed.add_error(f"{source} line {number}: JSON nested too deeply")
            continue
        except ValueError as exc:  # a number longer than Python converts (int_max_str_digits)
            parsed.add_error(f"{source} line {number}: {str(exc).split(';')[0]}")
            continue
        parsed.line_numbers.append(number)
    return parsed


def describe_json_error(exc: json.JSONDecodeError, where: str) -> str:
    """``where, column 9: Expecting ',' delimiter`` (with the line inside a multi-line text)."""
    position = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} column {exc.colno}"
    return f"{where}, {position}: {exc.msg}"


def source_name(file: object) -> str:
    """How errors name a file: its path, or ``<stdin>`` for ``-``."""
    name = getattr(file, "name", "-")
    return "<stdin>" if name in ("-", "<stdin>") or not isinstance(name, str) else name
