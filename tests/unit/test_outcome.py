"""The README's answer table, as code."""

from __future__ import annotations

import pytest

from worker.outcome import DeadLetter, Delivered, Reason, Retry, classify_error, classify_status


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify_status(status) == Delivered(status)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (408, Reason.HTTP_TIMEOUT),
        (425, Reason.HTTP_TIMEOUT),
        (429, Reason.RATE_LIMITED),
        (500, Reason.HTTP_5XX),
        (502, Reason.HTTP_5XX),
        (503, Reason.HTTP_5XX),
        (504, Reason.HTTP_5XX),
        (599, Reason.HTTP_5XX),
    ],
)
def test_transient_answers_are_retried(status: int, reason: Reason) -> None:
    assert classify_status(status, retry_after=3.0) == Retry(reason, status, 3.0)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, Reason.AUTH),
        (403, Reason.AUTH),
        (400, Reason.HTTP_4XX),
        (404, Reason.HTTP_4XX),
        (422, Reason.HTTP_4XX),
        (301, Reason.REDIRECT),
        (302, Reason.REDIRECT),
        (307, Reason.REDIRECT),
    ],
)
def test_permanent_answers_are_dead_lettered(status: int, reason: Reason) -> None:
    assert classify_status(status) == DeadLetter(reason, status)


def test_no_answer_is_retried() -> None:
    assert classify_error(timed_out=True) == Retry(Reason.TIMEOUT, None)
    assert classify_error(timed_out=False) == Retry(Reason.CONNECTION, None)
