"""worker/markers.py's pure parts: how an id is stored, how long a marker lasts."""

from __future__ import annotations

import uuid

from producer import contract
from worker import markers


def test_a_canonical_uuid_is_kept_as_its_16_bytes_anything_else_as_text() -> None:
    event_id = str(uuid.uuid4())
    assert markers.member(event_id) == uuid.UUID(event_id).bytes
    # (another spelling of the same UUID is another id: it is not folded into the first)
    assert markers.member(event_id.upper()) == b"=" + event_id.upper().encode()
    assert markers.member("order-1") == b"=order-1"
    assert len({markers.member(i) for i in ("a", "b", event_id, event_id.upper())}) == 4


def test_the_window_is_four_hours_or_four_visibility_timeouts() -> None:
    assert markers.window(300) == contract.DELIVERED_MARKER_WINDOW_SECONDS == 4 * 3600
    assert markers.window(7200) == 4 * 7200
