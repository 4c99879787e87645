"""Checks an event the way LimeChat would, before anything reaches Redis.

Every function raises :class:`ValidationError` naming the field, and returns the value in the
form that is sent (phone in E.164, data as a JSON-safe dict).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import phonenumbers

from . import contract
from .errors import ValidationError

# What a careful human writes in a phone number; anything else (letters, which phonenumbers
# would read as a vanity number, emoji, control characters) is refused.
_PHONE_CHARS = re.compile(r"^\+?[0-9 ().\-]+$")
_WHITESPACE = re.compile(r"\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_INT_DIGITS = 4000
_BIGGEST_INT = 10**_INT_DIGITS


def suggest_event_name(name: str) -> str:
    """The snake_case form of ``name``: ``"My Awesome Event"`` -> ``"my_awesome_event"``."""
    words = _CAMEL_BOUNDARY.sub(" ", name.strip())
    return "_".join(w for w in re.split(r"[\s_\-]+", words.lower()) if w)


def check_event_name(event: object) -> str:
    """The event name, non-empty, bounded, without spaces (LimeChat warns they break features)."""
    if not isinstance(event, str):
        raise ValidationError("event", f"must be a string, not {type(event).__name__}")
    if not event:
        raise ValidationError("event", "must not be empty")
    if len(event) > contract.EVENT_NAME_MAX_LENGTH:
        raise ValidationError(
            "event", f"is {len(event)} characters; at most {contract.EVENT_NAME_MAX_LENGTH}"
        )
    if _WHITESPACE.search(event):
        suggestion = suggest_event_name(event)
        hint = f"; use {suggestion!r}" if suggestion else ""
        raise ValidationError(
            "event",
            f"{event!r} contains whitespace, which breaks LimeChat features{hint}",
        )
    if _CONTROL.search(event):
        raise ValidationError("event", "contains control characters")
    _check_encodable("event", event)
    return event


def normalize_phone(phone: object) -> str:
    """The phone number in E.164 (``+915673412780``); it must carry its country code."""
    if not isinstance(phone, str):
        raise ValidationError("phone", f"must be a string, not {type(phone).__name__}")
    raw = phone.strip()
    if not raw:
        raise ValidationError("phone", "must not be empty")
    if len(raw) > contract.PHONE_MAX_LENGTH:
        raise ValidationError(
            "phone", f"is {len(raw)} characters; at most {contract.PHONE_MAX_LENGTH}"
        )
    if not _PHONE_CHARS.match(raw):
        raise ValidationError(
            "phone", f"{raw!r} may hold only digits, spaces, '+', '-', '.', '(' and ')'"
        )
    if not raw.startswith("+"):
        digits = re.sub(r"\D", "", raw)
        raise ValidationError(
            "phone",
            f"{raw!r} has no country code; write it in international form, e.g. '+{digits}'",
        )
    plain = _plainly_international(raw)
    if plain is not None:
        return plain
    parsed = _parsed(raw)
    if not phonenumbers.is_possible_number(parsed):
        raise ValidationError("phone", f"{raw!r} is not a possible number for its country code")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def _parsed(raw: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        detail = re.sub(r"^\(\d+\)\s*", "", str(exc))  # drop the library's "(3) " code
        raise ValidationError("phone", f"{raw!r} is not a phone number: {detail}") from None


def _plainly_international(raw: str) -> str | None:
    """``raw`` itself when it is a possible number written ``+<digits>`` and
    ``phonenumbers.parse`` could do no more than split off its country code (so that
    ``raw`` is already its E.164 form); ``None`` for every other number (parsed in full).

    Most web apps store numbers this way, and the full parse was half the cost of sending an
    event from a request (about 40 us warm, 230 us with caches cold). The library does more
    only where a national prefix may follow the country code (its own pattern for that
    country matches) or the number keeps leading zeros: those go to it, as do numbers of a
    length it does not call possible (for its error). tests/unit/test_phone_fast_path.py
    compares the two for every country code, against the installed phonenumbers (the rule
    this mirrors, libphonenumber's: parse strips a national prefix after the country code
    only where the country's prefix pattern matches there).
    """
    if not _PLAIN_INTERNATIONAL.fullmatch(raw):
        return None
    digits = raw[1:]
    for size in (1, 2, 3):  # (country codes are prefix-free: the first known one is it)
        country = _country(digits[:size])
        if country is not None:
            break
    else:
        return None
    national = digits[size:]
    if national[:1] == "0" or len(national) not in country.possible_lengths:
        return None
    if country.national_prefix is not None and country.national_prefix.match(national):
        return None
    return raw


class _Country(NamedTuple):
    """What the fast path needs of one country calling code's metadata."""

    #: The pattern ``parse`` strips a national prefix with, where the country has one.
    national_prefix: re.Pattern[str] | None
    #: The lengths of national number (no leading zero) ``is_possible_number`` accepts.
    possible_lengths: frozenset[int]


@functools.cache  # (keys: 1-3 digits, the first not 0: at most 999)
def _country(code_text: str) -> _Country | None:
    """The country calling code ``code_text``'s metadata; ``None`` if there is no such code.

    Possible lengths are asked of the library itself, once per length: for a number without
    leading zeros its answer depends only on the country code and the national number's
    length (``is_possible_number`` checks nothing else; the unit test holds it to that).
    """
    code = int(code_text)
    if code not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code)
    )
    if metadata is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    lengths = frozenset(
        n
        for n in range(2, 18)
        if phonenumbers.is_possible_number(
            phonenumbers.PhoneNumber(country_code=code, national_number=int("1" * n))
        )
    )
    return _Country(re.compile(prefix) if prefix else None, lengths)


_PLAIN_INTERNATIONAL = re.compile(r"\+[1-9][0-9]{2,19}")


def check_distinct_id(distinct_id: object, phone: str) -> str:
    """The user's id on the client's system; LimeChat says the phone may stand in for it."""
    if distinct_id is None:
        return phone
    if isinstance(distinct_id, int) and not isinstance(distinct_id, bool):
        if abs(distinct_id) >= 10**contract.DISTINCT_ID_MAX_LENGTH:
            raise ValidationError(
                "distinct_id", f"is longer than {contract.DISTINCT_ID_MAX_LENGTH} digits"
            )
        distinct_id = str(distinct_id)
    if not isinstance(distinct_id, str):
        raise ValidationError("distinct_id", f"must be a string, not {type(distinct_id).__name__}")
    if not distinct_id.strip():
        raise ValidationError("distinct_id", "must not be empty (omit it to use the phone)")
    return _bounded_text("distinct_id", distinct_id, contract.DISTINCT_ID_MAX_LENGTH)


def check_optional_text(field: str, value: object, max_length: int) -> str | None:
    """An optional short string such as ``account`` or ``idempotency_key``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string or None, not {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty (pass None instead)")
    return _bounded_text(field, value, max_length)


def check_data(data: object) -> tuple[dict[str, Any], int]:
    """The event's ``data``: a JSON object of JSON values, finite numbers, under the size cap.

    Returns the data and its encoded size in bytes.
    """
    if data is None:
        return {}, 2
    if not isinstance(data, Mapping):
        raise ValidationError("data", f"must be a JSON object (dict), not {type(data).__name__}")
    _check_json_value(data, "data", 0)
    # default=dict: a nested mapping that is not a dict (UserDict, MappingProxyType...) is
    # encoded as the object it is, and what is sent is that plain JSON (tuples become lists).
    encoded = json.dumps(
        data, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=dict
    )
    size = len(encoded.encode("utf-8"))
    if size > contract.DATA_MAX_BYTES:
        raise ValidationError("data", f"is {size} bytes as JSON; at most {contract.DATA_MAX_BYTES}")
    plain: dict[str, Any] = json.loads(encoded)
    return plain, size


def _check_json_value(value: object, path: str, depth: int) -> None:
    if depth > contract.DATA_MAX_DEPTH:
        raise ValidationError(path, f"nests deeper than {contract.DATA_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) >= _BIGGEST_INT:  # Python refuses to write them out (int_max_str_digits)
            raise ValidationError(path, f"is too large a number (more than {_INT_DIGITS} digits)")
        return
    if isinstance(value, str):
        _check_encodable(path, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(path, f"{value!r} is not a JSON number")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    path, f"has a key {key!r} of type {type(key).__name__}; keys must be strings"
                )
            _check_encodable(path, key)
            _check_json_value(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]", depth + 1)
    else:
        raise ValidationError(path, f"a {type(value).__name__} is not JSON-serialisable")


def _bounded_text(field: str, value: str, max_length: int) -> str:
    if len(value) > max_length:
        raise ValidationError(field, f"is {len(value)} characters; at most {max_length}")
    if _CONTROL.search(value):
        raise ValidationError(field, "contains control characters")
    _check_encodable(field, value)
    return value


def _check_encodable(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, "is not valid Unicode (lone surrogate)") from None
