"""The producer API fuzzed as a hostile or careless caller would, against the real Redis.

Every call either enqueues events the worker and LimeChat would accept, or raises
``ValidationError`` naming the field, with nothing enqueued. Never another exception, never
half a batch.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections import OrderedDict, UserDict
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from producer import Producer, ProducerSettings, ValidationError, contract
from producer.envelope import request_body
from worker.sandbox import check_body
from worker.vetting import envelope_problem

pytestmark = pytest.mark.integration

FIELDS = {"event", "phone", "distinct_id", "data", "account", "idempotency_key", "items"}
#: What ``send_events`` may name in an item: its fields, or the item itself (not a mapping).
ITEM_FIELDS = {"event", "phone", "distinct_id", "data", "account", "item"}
PHONE = "+915673412780"

# --- what a hostile caller passes -------------------------------------------------------
# Unicode of every kind, lone surrogates included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
huge_ints = st.integers(min_value=10**4299, max_value=10**4400) | st.integers(max_value=-(10**4299))
oddities = st.sampled_from(
    [object(), {1, 2}, frozenset(), b"bytes", bytearray(b"x"), 1j, Ellipsis, range(3), print]
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats()  # NaN and the infinities included
    | any_text
    | oddities
)
keys = any_text | st.integers() | st.none() | st.booleans() | st.floats() | st.tuples(st.integers())


def mappings(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Dicts, and the other mappings a careless caller holds (UserDict, OrderedDict, proxies)."""
    plain = st.dictionaries(keys, children, max_size=4)
    return plain | plain.map(UserDict) | plain.map(OrderedDict) | plain.map(MappingProxyType)


nested = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.tuples(children, children) | mappings(children)
    ),
    max_leaves=25,
)
anything = nested | mappings(nested)


def mostly(
    valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Three draws in four valid: enough whole calls get through to fuzz every later field."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: valid if ok else hostile)


good_phones = st.sampled_from([PHONE, "+91 56734 12780", "+1 (415) 555-2671", "+44 20 7946 0958"])
phones = mostly(
    good_phones,
    st.one_of(
        st.sampled_from(["915673412780", "+1-800-FLOWERS", "+91", "+" + "1" * 40]),
        st.from_regex(r"\+?[0-9 ().\-]{0,40}", fullmatch=True),  # with or without country code
        st.text(alphabet="+0123456789 -().abcxyz٣४", max_size=40),  # letters, other digits
        anything,
    ),
)
names = mostly(
    st.sampled_from(["order_placed", "product_view", "ÜberEvent", "注文"]),
    st.sampled_from(["Order Placed", "", "x" * 129, "tab\tname"]) | any_text | anything,
)
optional_text = mostly(st.none() | st.text(max_size=20).filter(str.strip), any_text | anything)
distinct_ids = mostly(
    st.none() | st.integers() | st.text(max_size=20), any_text | huge_ints | anything
)
datas = mostly(st.none() | mappings(nested), anything)


def queued(r: redis.Redis, start: int) -> list[dict[str, Any]]:
    """The events of the messages pushed since the queue was ``start`` long, oldest first."""
    raws = r.lrange(contract.QUEUE, 0, -1)
    new = raws[: len(raws) - start]
    out: list[dict[str, Any]] = []
    for raw in reversed(new):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        out.extend(body[0][0])
    return out


def assert_deliverable(event: dict[str, Any]) -> None:
    """What the worker and LimeChat's checks accept, exactly."""
    assert envelope_problem(dict(event)) == ""
    assert check_body(request_body(event)) is None, event  # type: ignore[arg-type]
    json.dumps(event, allow_nan=False)


@pytest.fixture
def first_ids() -> dict[tuple[str | None, str], str]:
    """(account, idempotency key) -> the event id its first accepted call returned.

    Hypothesis runs every example on one fixture, and Redis is not flushed between examples,
    so keys repeat across examples exactly as they would across a web app's requests.
    """
    return {}


@pytest.fixture
def fuzz_producer(redis_url: str) -> Iterator[tuple[Producer, redis.Redis]]:
    producer = Producer(ProducerSettings(redis_url=redis_url, batch_size=3))
    client = redis.Redis.from_url(redis_url)
    yield producer, client
    producer.close()
    client.close()


FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    event=names,
    phone=phones,
    distinct_id=distinct_ids,
    data=datas,
    account=optional_text,
    idempotency_key=optional_text,
)
@example(
    event="e",
    phone=PHONE,
    distinct_id=None,
    data={"n": 10**5000},
    account=None,
    idempotency_key=None,
)
@example(
    event="e", phone=PHONE, distinct_id=10**5000, data=None, account=None, idempotency_key=None
)
@example(
    event="e",
    phone=PHONE,
    distinct_id=None,
    data={"m": UserDict({"k": 1})},
    account=None,
    idempotency_key=None,
)
@example(
    event="e",
    phone=PHONE,
    distinct_id=None,
    data={"x": math.nan},
    account=None,
    idempotency_key=None,
)
def test_send_event_enqueues_a_deliverable_event_or_raises_validation_error_naming_the_field(
    fuzz_producer: tuple[Producer, redis.Redis],
    first_ids: dict[tuple[str | None, str], str],
    event: Any,
    phone: Any,
    distinct_id: Any,
    data: Any,
    account: Any,
    idempotency_key: Any,
) -> None:
    producer, r = fuzz_producer
    before = r.llen(contract.QUEUE)
    try:
        event_id = producer.send_event(
            event,
            phone=phone,
            distinct_id=distinct_id,
            data=data,
            account=account,
            idempotency_key=idempotency_key,
        )
    except ValidationError as exc:
        assert exc.field.split(".")[0].split("[")[0] in FIELDS, exc.field
        assert r.llen(contract.QUEUE) == before
        return
    events = queued(r, before)
    if idempotency_key is not None:
        if (account, idempotency_key) in first_ids:
            # The key was accepted before: nothing new is enqueued, and the call returns the
            # id of the event the key first produced (README: at most once per key).
            assert (events, event_id) == ([], first_ids[account, idempotency_key])
            return
        first_ids[account, idempotency_key] = event_id  # new: enqueued like any other
    [sent] = events
    assert sent["id"] == event_id and sent["event"] == event
    assert_deliverable(sent)


item_values = st.fixed_dictionaries(
    {"event": names, "phone": phones},
    optional={"distinct_id": distinct_ids, "data": datas, "account": optional_text},
)
careless_items = st.one_of(
    item_values.map(UserDict),  # not a dict, still a mapping
    st.builds(lambda d, k: {**d, k: 1}, item_values, keys),  # a typo'd or odd key
    st.builds(lambda d: {k: v for k, v in d.items() if k != "phone"}, item_values),
    anything,
)
item_lists = st.lists(mostly(item_values, careless_items), min_size=0, max_size=8)


@FUZZ
@given(items=mostly(item_lists, anything))
@example(items=None)
@example(items={"event": "order_placed", "phone": PHONE})
@example(items="order_placed")
@example(
    items=[{"event": "ok", "phone": PHONE}] * 5
    + [{"event": "ok", "phone": PHONE, "data": {"n": 10**5000}}]
)
def test_send_events_enqueues_all_or_nothing_and_names_index_and_field(
    fuzz_producer: tuple[Producer, redis.Redis], items: Any
) -> None:
    producer, r = fuzz_producer
    before = r.llen(contract.QUEUE)
    try:
        ids = producer.send_events(items)
    except ValidationError as exc:
        assert r.llen(contract.QUEUE) == before
        assert_names_the_item_and_field(items, exc)
        return
    events = queued(r, before)
    assert [e["id"] for e in events] == ids
    assert len(ids) == len(list(items))
    for sent in events:
        assert_deliverable(sent)


def assert_names_the_item_and_field(items: Any, exc: ValidationError) -> None:
    """``exc`` names ``items`` itself, or one item by index and the field that is wrong in it."""
    if exc.index is None:
        assert exc.field == "items", exc  # not a list of events at all
        return
    item = list(items)[exc.index]
    root = exc.field.split(".")[0].split("[")[0]
    if root == "item":
        assert not isinstance(item, Mapping), exc  # the item is not an object
    elif root not in ITEM_FIELDS:
        # a key that is not an event field (a typo): named as the item spells it
        assert isinstance(item, Mapping) and exc.field in {str(k) for k in item}, (exc, item)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"blob": "x" * (100 * 1024 * 1024)}, "data"),  # 100 MB of text
        ({"n": list(range(2_000_000))}, "data"),  # two million numbers
        ({f"k{i}": i for i in range(200_000)}, "data"),  # two hundred thousand keys
    ],
    ids=["100MB-string", "2M-list", "200k-keys"],
)
def test_huge_data_is_refused_quickly_naming_data(
    fuzz_producer: tuple[Producer, redis.Redis], data: Mapping[str, Any], field: str
) -> None:
    producer, r = fuzz_producer
    started = time.monotonic()
    with pytest.raises(ValidationError) as err:
        producer.send_event("order_placed", phone=PHONE, data=data)
    took = time.monotonic() - started
    assert err.value.field == field and "bytes as JSON" in err.value.reason
    assert len(str(err.value)) < 200  # the message does not echo the data
    assert took < 10, took
    assert r.llen(contract.QUEUE) == 0


def test_data_nested_a_million_deep_is_refused_without_a_recursion_error(
    fuzz_producer: tuple[Producer, redis.Redis],
) -> None:
    producer, r = fuzz_producer
    deep: list[Any] = []
    node = deep
    for _ in range(1_000_000):
        node.append([])
        node = node[0]
    with pytest.raises(ValidationError, match="nests deeper") as err:
        producer.send_event("order_placed", phone=PHONE, data={"deep": deep})
    assert err.value.field.startswith("data.deep")
    assert r.llen(contract.QUEUE) == 0
