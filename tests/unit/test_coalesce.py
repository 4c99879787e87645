"""worker/coalesce.py's merge: which waiting messages travel with the one taken, in what order."""

from __future__ import annotations

import base64
import json
from typing import Any

from producer import contract, wire
from worker import coalesce


def message(*ns: int, account: str | None = None, redelivered: bool = False) -> dict[str, Any]:
    events = [{"id": f"e{n}", "n": n, **({"account": account} if account else {})} for n in ns]
    return dict(json.loads(wire.encode_message(events, redelivered=redelivered)))  # type: ignore[arg-type]


def raw(m: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    return json.dumps(m).encode(), m


def numbers(m: dict[str, Any]) -> list[int]:
    return [e["n"] for e in coalesce.events_of(m) or []]


def test_waiting_messages_of_the_same_account_join_the_first_in_order() -> None:
    first, more = message(0), [raw(message(1)), raw(message(2, 3)), raw(message(4))]
    merged = coalesce.merge(first, more, 10, contract.QUEUE)
    assert numbers(merged.message) == [0, 1, 2, 3, 4]
    assert merged.put_back == []
    assert merged.message["properties"]["delivery_info"]["routing_key"] == contract.QUEUE
    assert not coalesce.redelivered(merged.message)


def test_what_does_not_fit_goes_back_and_keeps_its_order() -> None:
    more = [raw(message(1)), raw(message(2, 3)), raw(message(4))]
    merged = coalesce.merge(message(0), more, 3, contract.QUEUE)
    # (4 would fit after 0 and 1, but it waits behind 2-3: the account's order is kept)
    assert numbers(merged.message) == [0, 1]
    assert merged.put_back == [more[2][0], more[1][0]]  # RPUSHed in this order: 2-3 is next


def test_another_accounts_messages_go_back_and_the_rest_join() -> None:
    more = [raw(message(1, account="b")), raw(message(2)), raw(message(3, account="b"))]
    merged = coalesce.merge(message(0), more, 10, contract.QUEUE)
    assert numbers(merged.message) == [0, 2]
    assert merged.put_back == [more[2][0], more[0][0]]


def test_one_redelivered_message_makes_the_whole_batch_redelivered() -> None:
    merged = coalesce.merge(message(0), [raw(message(1, redelivered=True))], 10, "q")
    assert numbers(merged.message) == [0, 1] and coalesce.redelivered(merged.message)


def test_nothing_joins_a_first_message_of_several_accounts_or_of_odd_accounts() -> None:
    mixed = message(0)
    body = [[[{"id": "a", "account": "x"}, {"id": "b", "account": "y"}]], {}, {}]
    mixed["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    more = [raw(message(1))]
    assert coalesce.merge(mixed, more, 10, "q") == coalesce.Merged(mixed, [more[0][0]])
    odd = message(0)
    body = [[[{"id": "a", "account": ["not", "text"]}]], {}, {}]
    odd["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    assert coalesce.merge(odd, more, 10, "q").put_back == [more[0][0]]


def test_an_unreadable_message_is_not_merged() -> None:
    broken = {"properties": {"body_encoding": "base64"}, "body": "!!", "headers": {}}
    assert coalesce.events_of(broken) is None
    more = [raw(message(1))]
    assert coalesce.merge(broken, more, 10, "q") == coalesce.Merged(broken, [more[0][0]])
