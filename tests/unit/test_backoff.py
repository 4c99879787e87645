"""Backoff and Retry-After, with time and randomness passed in."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from worker.backoff import backoff_delay, parse_retry_after, retry_delay

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("attempts", "rand", "expected"),
    [
        (1, 0.999999, 2.0 * 0.999999),
        (2, 0.5, 2.0),
        (3, 0.5, 4.0),
        (4, 1.0, 16.0),
        (20, 1.0, 600.0),  # capped
        (5000, 1.0, 600.0),  # no overflow
        (1, 0.0, 0.0),
    ],
)
def test_full_jitter_exponential(attempts: int, rand: float, expected: float) -> None:
    assert backoff_delay(attempts, base=2.0, cap=600.0, rand=rand) == pytest.approx(expected)


def test_fractional_base_and_cap_are_allowed() -> None:
    assert backoff_delay(3, base=0.05, cap=0.3, rand=1.0) == pytest.approx(0.2)
    assert backoff_delay(4, base=0.05, cap=0.3, rand=1.0) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (format_datetime(datetime.fromtimestamp(NOW + 30, timezone.utc), usegmt=True), 30.0),
        (format_datetime(datetime.fromtimestamp(NOW - 30, timezone.utc), usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("-5", None),
        ("\u00b2", None),  # a digit to str.isdigit(), not to int()
        ("9" * 400, float("inf")),  # more than a float holds: the caller caps it
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    got = parse_retry_after(header, NOW)
    if expected is None:
        assert got is None
    elif expected == float("inf"):
        assert got == expected
    else:
        assert got == pytest.approx(expected, abs=1.0)


def test_retry_after_wins_over_a_shorter_backoff_but_not_over_the_cap() -> None:
    assert retry_delay(1, 2.0, 600.0, 0.1, retry_after=30.0) == 30.0
    assert retry_delay(1, 2.0, 600.0, 0.1, retry_after=None) == pytest.approx(0.2)
    year = 365 * 24 * 3600.0
    assert retry_delay(1, 2.0, 600.0, 0.1, retry_after=year) == 600.0
    assert retry_delay(1, 2.0, 600.0, 0.1, retry_after=float("inf")) == 600.0
