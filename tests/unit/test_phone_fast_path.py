"""The phone fast path (``validation._plainly_international``) reads numbers as phonenumbers does.

For numbers written ``+<digits>``, ``normalize_phone`` skips ``phonenumbers.parse`` when the
library would do no more than split off the country code. These tests compare the outcome
(the E.164 text, or the error) with the full parse for every country code phonenumbers knows,
every national length it accepts, and national numbers that start with each digit and with
each country's own national prefix.
"""

from __future__ import annotations

import random
import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer import validation
from producer.errors import ValidationError


def by_the_library(raw: str) -> str:
    """What normalize_phone answered before the fast path: the full parse, always."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        detail = re.sub(r"^\(\d+\)\s*", "", str(exc))
        return f"error: {raw!r} is not a phone number: {detail}"
    if not phonenumbers.is_possible_number(parsed):
        return f"error: {raw!r} is not a possible number for its country code"
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def by_us(raw: str) -> str:
    try:
        return validation.normalize_phone(raw)
    except ValidationError as exc:
        return f"error: {exc.reason}"


def samples() -> list[str]:
    chance = random.Random(2026)
    numbers = []
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        for length in range(1, 19):
            for first in "0123456789":
                rest = "".join(chance.choice("0123456789") for _ in range(length - 1))
                numbers.append(f"+{code}{first}{rest}")
    return numbers


def test_every_country_code_and_length_gives_what_the_full_parse_gives() -> None:
    numbers = samples()
    accepted = [raw for raw in numbers if not by_the_library(raw).startswith("error")]
    fast = [raw for raw in accepted if validation._plainly_international(raw) is not None]
    # (the fast path must be the common case, or it is not worth its lines)
    assert len(fast) > len(accepted) / 2
    differ = [(raw, by_us(raw), by_the_library(raw)) for raw in numbers]
    assert [d for d in differ if d[1] != d[2]] == []


def test_the_fast_path_takes_only_possible_numbers_the_full_parse_leaves_as_written() -> None:
    for raw in samples():
        if validation._plainly_international(raw) is not None:
            parsed = phonenumbers.parse(raw, None)
            assert phonenumbers.is_possible_number(parsed), raw
            assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == raw


def test_possibility_depends_only_on_the_country_code_and_the_length() -> None:
    """What the fast path's table of possible lengths per country code rests on."""
    chance = random.Random(7)
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        for length in range(2, 18):
            answers = {
                phonenumbers.is_possible_number(
                    phonenumbers.PhoneNumber(
                        country_code=code,
                        national_number=int(
                            chance.choice("123456789")
                            + "".join(chance.choice("0123456789") for _ in range(length - 1))
                        ),
                    )
                )
                for _ in range(5)
            }
            assert len(answers) == 1, (code, length)


@pytest.mark.parametrize(
    "raw",
    [
        "+915673412780",  # India: national prefix 0, not written
        "+14155552671",  # NANP
        "+447911123456",  # UK
        "+390612345678",  # Italy: a leading zero kept (the full parse)
        "+5491123456789",  # Argentina: its prefix pattern matches anything (the full parse)
        "+4400201234567",  # a national prefix written after the country code (the full parse)
        "+999123456",  # no such country code
    ],
)
def test_known_numbers(raw: str) -> None:
    assert by_us(raw) == by_the_library(raw)


@given(st.from_regex(r"\+[0-9]{1,22}", fullmatch=True))
def test_any_plus_digits(raw: str) -> None:
    assert by_us(raw) == by_the_library(raw)
