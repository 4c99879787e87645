"""The producer's checks, by example and by hypothesis."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer import ValidationError, contract
from producer.api import build_event
from producer.validation import normalize_phone, suggest_event_name

SEED_PHONE = "+915673412780"


def test_the_seeds_phone_passes_and_stays_e164() -> None:
    assert normalize_phone(SEED_PHONE) == SEED_PHONE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+91 56734 12780", SEED_PHONE),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_is_normalised_to_e164(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("915673412780", "has no country code"),
        ("5673412780", "e.g. '+5673412780'"),
        ("+91 CALL-NOW", "may hold only digits"),
        ("+1-800-FLOWERS", "may hold only digits"),
        ("+91", "'+91' is not a phone number"),  # a country code alone
        ("+999 1234567", "'+999 1234567' is not a phone number"),  # no such country code
        ("+91 123", "not a possible number"),
        ("+91 1", "too short"),
        ("", "must not be empty"),
        ("+" + "1" * 40, "at most"),
    ],
)
def test_bad_phones_are_refused_with_a_reason(raw: str, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        normalize_phone(raw)
    assert err.value.field == "phone"
    assert says in str(err.value)


def test_an_event_name_with_spaces_is_refused_with_its_snake_case_form() -> None:
    with pytest.raises(ValidationError) as err:
        build_event("My Awesome Event", SEED_PHONE, None, None, None)
    assert err.value.field == "event"
    assert "'my_awesome_event'" in str(err.value)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("My Awesome Event", "my_awesome_event"),
        ("order  placed", "order_placed"),
        ("MyAwesome Event", "my_awesome_event"),
        ("  padded ", "padded"),
    ],
)
def test_suggested_names(name: str, suggestion: str) -> None:
    assert suggest_event_name(name) == suggestion


@pytest.mark.parametrize("name", ["MyAwesomeEvent", "My_Awesome_Event", "my_awesome_event"])
def test_limechats_good_names_pass(name: str) -> None:
    assert build_event(name, SEED_PHONE, None, None, None)["event"] == name


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ("", "must not be empty"),
        ("x" * (contract.EVENT_NAME_MAX_LENGTH + 1), "at most"),
        (None, "must be a string"),
        ("tab\tname", "whitespace"),
        ("bell\x07", "control"),
    ],
)
def test_bad_event_names(event: object, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        build_event(event, SEED_PHONE, None, None, None)
    assert err.value.field == "event"
    assert says in str(err.value)


def test_distinct_id_defaults_to_the_phone() -> None:
    event = build_event("product_view", SEED_PHONE, None, None, None)
    assert event["distinct_id"] == SEED_PHONE
    assert event["data"] == {}


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ([1, 2], "data", "must be a JSON object"),
        ({"price": math.nan}, "data.price", "not a JSON number"),
        ({"price": math.inf}, "data.price", "not a JSON number"),
        ({1: "x"}, "data", "keys must be strings"),
        ({"when": object()}, "data.when", "not JSON-serialisable"),
        ({"s": "\ud800"}, "data.s", "lone surrogate"),
        ({"big": "x" * contract.DATA_MAX_BYTES}, "data", "bytes as JSON"),
    ],
)
def test_bad_data_names_the_field(data: object, field: str, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        build_event("e", SEED_PHONE, None, data, None)
    assert err.value.field == field
    assert says in str(err.value)


def test_too_deep_data_is_refused_not_a_recursion_error() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(10_000):
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="nests deeper"):
        build_event("e", SEED_PHONE, None, deep, None)


def test_a_self_referencing_dict_is_refused() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(ValidationError, match="nests deeper"):
        build_event("e", SEED_PHONE, None, loop, None)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(data=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
@settings(max_examples=200, deadline=None)
def test_any_json_object_small_enough_is_accepted_unchanged(data: dict[str, object]) -> None:
    try:
        event = build_event("e", SEED_PHONE, None, data, None)
    except ValidationError as exc:
        # The only legitimate refusals of valid JSON: lone surrogates in text.
        assert "surrogate" in str(exc)
        return
    assert json.loads(json.dumps(event["data"])) == json.loads(json.dumps(data))


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers()),
)


@given(
    event=anything,
    phone=anything | st.text(alphabet="+0123456789 -()abc", max_size=40),
    distinct_id=anything,
    data=anything | json_values,
    account=anything,
)
@settings(max_examples=500, deadline=None)
def test_any_input_is_either_a_valid_event_or_a_validation_error_naming_a_field(
    event: object, phone: object, distinct_id: object, data: object, account: object
) -> None:
    try:
        built = build_event(event, phone, distinct_id, data, account)
    except ValidationError as exc:
        assert exc.field.split(".")[0].split("[")[0] in {
            "event",
            "phone",
            "distinct_id",
            "data",
            "account",
        }
        return
    assert isinstance(built["event"], str) and built["event"]
    assert built["phone"].startswith("+") and built["phone"][1:].isdigit()
    assert isinstance(built["data"], dict)
    json.dumps(built, allow_nan=False)
