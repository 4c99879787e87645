"""JSON lines for ``send --file``: errors name the line and the column."""

from __future__ import annotations

import json

from worker.files import describe_json_error, parse_json_lines

# LimeChat's own order_placed example, as its page prints it: a comma is missing after
# "products".
SEED_ORDER_PLACED = """{
    "distinct_id": "915673412780",
    "phone": "+915673412780",
    "event": "order_placed",
    "data": {
        "order_id": "98765",
        "total_amount": "$199",
        "products": [{"product_id": "12345", "quantity": 2}, {"product_id": "67890", "quantity": 1}]
        "currency": "INR"
    }
}"""


def test_the_seeds_order_placed_example_is_reported_where_the_comma_is_missing() -> None:
    try:
        json.loads(SEED_ORDER_PLACED)
    except json.JSONDecodeError as exc:
        message = describe_json_error(exc, "--data")
    assert message == "--data, line 9 column 9: Expecting ',' delimiter"


def test_lines_blank_lines_bom_and_errors() -> None:
    lines = [
        b'\xef\xbb\xbf{"event": "a", "phone": "+915673412780"}\n',
        b"\n",
        b'{"event": "b", "phone": "+915673412780",}\n',
        b"\xff\xfe\x00binary\n",
        b'{"event": "c", "phone": "+915673412780"}\n',
    ]
    parsed = parse_json_lines(lines, "events.jsonl")
    assert [i["event"] for i in parsed.items] == ["a", "c"]
    assert parsed.line_numbers == [1, 5]
    assert parsed.errors == [
        "events.jsonl line 3, column 41: Expecting property name enclosed in double quotes",
        "events.jsonl line 4: not UTF-8 text (byte 1); is this a binary file?",
    ]
