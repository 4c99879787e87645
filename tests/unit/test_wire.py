"""The task message ``wire.encode_message`` writes from its template is the one it always wrote.

The template is cut from ``json.dumps`` of the message once per queue; these tests rebuild the
message the plain way (one dict, dumped per call) and compare, for the awkward values: ids with
quotes, backslashes and ``%``, a queue with ``%`` in it, text outside ASCII.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from producer import contract, wire
from producer.envelope import Event, new_event, new_id


def plain_message(events: list[Event], queue: str, redelivered: bool, ids: dict[str, str]) -> Any:
    body = json.dumps([[events], {}, wire._EMBED], ensure_ascii=False, allow_nan=False)
    first = events[0]["id"] if events else ""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": contract.TASK_DELIVER,
        "id": ids["task"],
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": ids["task"],
        "parent_id": None,
        "argsrepr": f"<{len(events)} event(s), first {first}>",
        "kwargsrepr": "{}",
        "origin": wire._ORIGIN,
        "ignore_result": True,
    }
    delivery_info: dict[str, Any] = {"exchange": "", "routing_key": queue}
    if redelivered:
        headers["redelivered"] = delivery_info["redelivered"] = True
    return {
        "body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": ids["task"],
            "delivery_mode": 2,
            "delivery_info": delivery_info,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": ids["tag"],
        },
    }


def event(event_id: str, text: str = "x") -> Event:
    return new_event("order_placed", "+915673412780", "d", {"note": text}, None, event_id=event_id)


@given(
    event_id=st.text(min_size=1, max_size=40),
    text=st.text(max_size=40),
    queue=st.sampled_from([contract.QUEUE, "q%s", 'q"%(id)s', "ü"]),
    redelivered=st.booleans(),
    count=st.integers(min_value=1, max_value=3),
)
def test_the_message_is_what_one_json_dumps_of_it_writes(
    event_id: str, text: str, queue: str, redelivered: bool, count: int
) -> None:
    events = [event(f"{event_id}{i}", text) for i in range(count)]
    encoded = wire.encode_message(events, queue=queue, redelivered=redelivered)
    written = json.loads(encoded)
    ids = {"task": written["headers"]["id"], "tag": written["properties"]["delivery_tag"]}
    assert written == plain_message(events, queue, redelivered, ids)


def test_every_message_has_ids_of_its_own() -> None:
    one, two = (json.loads(wire.encode_message([event("same")])) for _ in range(2))
    assert one["headers"]["id"] != two["headers"]["id"]
    assert one["properties"]["delivery_tag"] != two["properties"]["delivery_tag"]
    assert one["headers"]["id"] != one["properties"]["delivery_tag"]


def test_new_id_is_a_version_4_uuid_as_str_uuid4_writes_it() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:2000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every hex digit of the random part turns up in the variant's place, mapped into 8-b.
    assert {text[19] for text in ids} == set("89ab")
