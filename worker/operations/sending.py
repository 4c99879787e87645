"""``send --file``: the events of a JSON-lines file, checked line by line before any is sent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from producer.errors import ValidationError

from ..files import parse_json_lines


@dataclass(frozen=True)
class CheckedFile:
    """The good items (request bodies, ready for ``Producer.send_events``) and the bad lines:
    ``problems`` to show (the first ones, then how many more), ``bad`` how many."""

    good: list[Any]
    bad: int
    problems: list[str]


def check_file(lines: Iterable[bytes], source: str, account: str | None = None) -> CheckedFile:
    """Each line validated as the producer will (so a bad item is reported by its line, and
    can be skipped); ``account`` given applies to every item."""
    from producer.api import _event_from_item

    parsed = parse_json_lines(lines, source)
    items, numbers = parsed.items, parsed.line_numbers
    if account is not None:
        items = [{**i, "account": account} if isinstance(i, dict) else i for i in items]
    good: list[Any] = []
    for index, item in enumerate(items):
        try:
            _event_from_item(item, index)
        except ValidationError as exc:
            parsed.add_error(f"{source} line {numbers[index]}: {exc.field}: {exc.reason}")
            continue
        good.append(item)
    return CheckedFile(good, parsed.error_count, parsed.report())
