"""Phone-like numbers are masked in text (log lines, console pages); ids and times are not."""

from __future__ import annotations

import pytest

from worker.logs import mask_phones_in


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("call +915673412780", "5673412"),
        ("call +91 98765 43210 now", "98765 4"),
        ("+1-415-555-0100", "415-555"),
        ("+44 20 7946 0958.", "20 7946"),
        ("915673412780", "5673412"),
    ],
)
def test_phone_numbers_are_masked_however_they_are_written(text: str, hidden: str) -> None:
    masked = mask_phones_in(text)
    assert hidden not in masked and "****" in masked, masked


@pytest.mark.parametrize(
    "text",
    [
        "evt=72ba1e88-400d-4195-9235-2dcf36708459",
        "at 1764450000.123",
        "page +1 2 of 3",
        "status 503 after 12 ms",
    ],
)
def test_ids_times_and_small_numbers_are_left_alone(text: str) -> None:
    assert mask_phones_in(text) == text
