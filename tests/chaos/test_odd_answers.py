"""Odd answers from the receiver, handled as the README's table says, and always bounded."""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import Any

import pytest
import redis

from producer import Producer, contract
from tests.helpers import WorkerProcess, running_worker, stop_all, wait_for, worker_env
from worker import markers

from .figures import record
from .receiver import Action, Answer, ChaosReceiver, Garbage, Received, Stall
from .support import PHONE, dead_letters, items, wait_settled

pytestmark = pytest.mark.integration

HTML = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"
TWO_MB = b'{"error": "' + b"x" * (2 * 1024 * 1024) + b'"}'
CAP = 4.0  # LIMECHAT_RETRY_MAX_SECONDS: also the longest Retry-After honoured
TIMEOUT = 1.0  # LIMECHAT_TIMEOUT_SECONDS
STALL = 30.0  # how long the receiver says nothing to one request
A_YEAR = str(365 * 24 * 3600)


def http_date(offset: float) -> str:
    return formatdate(time.time() + offset, usegmt=True)


def scripted(
    first_answers: dict[int, Sequence[Callable[[], Action]]],
) -> Callable[[Received], Action]:
    """Per seq, the answers to its first attempts (built when they happen); 200 after them."""
    lock = threading.Lock()
    attempts: dict[Any, int] = defaultdict(int)

    def script(req: Received) -> Action:
        with lock:
            n = attempts[req.seq]
            attempts[req.seq] += 1
        plan = first_answers.get(req.seq, ())
        return plan[n]() if n < len(plan) else Answer()

    return script


def scheduled_waits(worker_output: str) -> dict[str, float]:
    """Event id -> the wait the worker chose for its retry (its ``retry scheduled`` line)."""
    lines = re.findall(r"retry scheduled evt=(\S+) .*\bretry_in=([0-9.]+)", worker_output)
    return {evt: float(seconds) for evt, seconds in lines}


def attempts_of(receiver: ChaosReceiver) -> dict[Any, list[Received]]:
    by_seq: dict[Any, list[Received]] = defaultdict(list)
    for req in receiver.snapshot():
        by_seq[req.seq].append(req)
    return by_seq


def test_odd_answers_are_delivered_retried_or_dead_lettered_as_documented(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """Empty, HTML, 2 MB bodies, redirects, Retry-After past/date/absurd/garbage, stalls, junk."""
    elsewhere = ChaosReceiver()  # where the redirects point: must never be called
    cases: dict[int, Sequence[Callable[[], Action]]] = {
        0: [lambda: Answer(200, b"")],  # an empty body
        1: [lambda: Answer(200, HTML, content_type="text/html")],  # HTML, but 200
        2: [lambda: Answer(204, b"")],  # no content
        3: [lambda: Answer(200, TWO_MB)],  # a 2 MB body
        4: [lambda: Answer(502, HTML, content_type="text/html")],  # a proxy's HTML error page
        5: [lambda: Answer(400, TWO_MB)],  # a 2 MB error body: kept to 2,048 characters
        6: [lambda: Answer(301, b"", (("Location", elsewhere.url),))],
        7: [lambda: Answer(307, b"", (("Location", elsewhere.url),))],
        8: [lambda: Answer(503, b"", (("Retry-After", http_date(-3600)),))],  # in the past
        9: [lambda: Answer(503, b"", (("Retry-After", http_date(3)),))],  # an HTTP date
        10: [lambda: Answer(503, b"", (("Retry-After", A_YEAR),))],  # absurd: a year
        11: [lambda: Answer(503, b"", (("Retry-After", "99999999999999999999999"),))],
        12: [lambda: Answer(503, b"", (("Retry-After", "soon"),))],  # unreadable: ignored
        13: [lambda: Answer(503, b"", (("Retry-After", "-5"),))],
        14: [lambda: Stall(STALL)],  # no answer at all: the read timeout
        15: [lambda: Garbage()],  # not HTTP
        16: [lambda: Answer(599, b"")],  # an unheard-of 5xx
    }
    chaos.script = scripted(cases)
    env = worker_env(
        redis_url,
        chaos.url,
        LIMECHAT_RETRY_MAX_SECONDS=str(CAP),
        LIMECHAT_TIMEOUT_SECONDS=str(TIMEOUT),
        LIMECHAT_WORKER_CONCURRENCY="8",
    )
    seqs = range(len(cases))
    try:
        ids = dict(zip(seqs, producer.send_events(items(seqs)), strict=True))
        with running_worker(env) as worker:
            wait_settled(seqs, chaos, r, 60, "every odd answer handled")
            time.sleep(0.5)  # any second request would come now
    finally:
        elsewhere.stop()
    chosen = scheduled_waits(worker.text())
    retried = (4, 8, 9, 10, 11, 12, 13, 14)
    assert all(ids[seq] in chosen for seq in retried), chosen
    waits = {seq: chosen[ids[seq]] for seq in retried}
    by_seq = attempts_of(chaos)
    dead = {e["event_id"]: e for e in dead_letters(r)}
    outcome = {seq: [req.outcome for req in by_seq[seq]] for seq in seqs}

    # 2xx of any shape: delivered at the first attempt, marked delivered
    for seq in (0, 1, 2, 3):
        assert outcome[seq] == [["200", "200", "204", "200"][seq]], (seq, outcome[seq])
        assert markers.is_delivered(r, ids[seq])
    # 4xx and 3xx: dead-lettered after one request, redirects not followed
    assert outcome[5] == ["400"] and outcome[6] == ["301"] and outcome[7] == ["307"]
    assert (dead[ids[5]]["reason"], dead[ids[5]]["status"]) == ("http_4xx", 400)
    body = dead[ids[5]]["response_body"]
    assert len(body) <= 2048 + len("…[truncated]") and body.endswith("[truncated]")
    assert [dead[ids[s]]["reason"] for s in (6, 7)] == ["redirect", "redirect"]
    assert not elsewhere.snapshot()
    assert set(dead) == {ids[5], ids[6], ids[7]}
    # retried once, then delivered: 5xx, timeouts, junk
    for seq in (4, 8, 9, 10, 11, 12, 13, 14, 15, 16):
        assert outcome[seq][-1] == "200" and len(outcome[seq]) == 2, (seq, outcome[seq])
    assert outcome[14][0] == "stall" and outcome[15][0] == "garbage"

    def gap(seq: int) -> float:
        first, second = by_seq[seq]
        return second.at - first.at

    gaps = {seq: round(gap(seq), 2) for seq in retried}
    # The wait each retry was given is the worker's choice (its log line); when the second
    # request came depends on the machine too, so gaps are checked against it only from below:
    # never sooner than the wait.
    for seq, waited in gaps.items():
        assert waited >= waits[seq] - 0.05, (seq, waits, gaps)
    # the backoff alone, at most LIMECHAT_RETRY_BASE_SECONDS after a first failure: with no
    # Retry-After (a proxy's 502), one in the past ("now"), an unreadable or a negative one
    base = float(env["LIMECHAT_RETRY_BASE_SECONDS"])
    for seq in (4, 8, 12, 13, 14):
        assert waits[seq] <= base, (seq, waits)
    # an HTTP date 3 s ahead is honoured (it has 1-second resolution)
    assert 1.5 <= waits[9] <= 3.0 and gaps[9] >= 1.5, (waits, gaps)
    # absurd ones are capped at LIMECHAT_RETRY_MAX_SECONDS: waited for, but bounded
    for seq in (10, 11):
        assert waits[seq] == CAP and gaps[seq] >= CAP - 0.1, (waits, gaps)
    # a stalled request is given up after the read timeout, not when the receiver hangs up:
    # the gap is a timeout plus a backoff; half the stall is a bound no busy machine reaches
    assert TIMEOUT - 0.1 <= gaps[14] < STALL / 2, gaps
    history = {e["event"]["data"]["seq"]: e for e in dead.values()}
    assert history.keys() == {5, 6, 7}
    record(
        "odd answers",
        cases=len(cases),
        outcomes=outcome,
        seconds_between_first_and_second_attempt=gaps,
        seconds_the_worker_chose_to_wait=waits,
        retry_cap=CAP,
        error_body_kept_chars=len(body),
    )


def test_a_429_asking_for_a_year_pauses_the_account_only_up_to_the_cap(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """Rate limit on: a 429 pauses every worker for its Retry-After, capped (README)."""
    cap, others = 3.0, range(1, 21)
    chaos.script = scripted({0: [lambda: Answer(429, b"", (("Retry-After", A_YEAR),))]})
    env = worker_env(
        redis_url, chaos.url, LIMECHAT_RATE_LIMIT="50/s", LIMECHAT_RETRY_MAX_SECONDS=str(cap)
    )
    # Given two worker processes (each its own output, to tell which one did what)
    workers = [WorkerProcess(env).start() for _ in range(2)]
    try:
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        wait_for(lambda: chaos.snapshot(), 20, "the 429")
        paused_at = chaos.snapshot()[0].at
        # Then the account is paused for the cap, not a year
        pause = contract.rate_keys(env["LIMECHAT_ACCOUNT_ID"]).pause
        wait_for(lambda: r.exists(pause), 5, "the pause")
        assert r.pttl(pause) <= cap * 1000, f"paused for {r.pttl(pause) / 1000:.0f} s"
        # When events come while it lasts, one message each, so that both workers take some
        ids = {producer.send_event("order_placed", phone=PHONE, data={"seq": s}): s for s in others}
        # ...then everything is delivered soon after it
        wait_settled(range(21), chaos, r, cap + 30, "every event after the capped pause")
    finally:
        stop_all(workers)
    by_seq = attempts_of(chaos)
    retried_after = by_seq[0][1].at - paused_at
    others_after = min(by_seq[s][0].at for s in others) - paused_at
    assert retried_after >= cap - 0.05, retried_after
    # Every worker held them back: each parked some for their slot after the pause, and none
    # was sent before it ended (the pause was written after the 429 arrived, so it ends at
    # least `cap` after that arrival; the receiver's clock is checked from below only)
    for worker in workers:
        held = re.findall(r"rate limited evt=(\S+): slot in", worker.text())
        assert {ids.get(evt) for evt in held} - {None}, worker.text()[-3000:]
    assert others_after >= cap - 0.05, others_after
    record(
        "429 with Retry-After of a year, rate limit on, two workers",
        retry_cap=cap,
        seconds_until_the_429d_event_was_retried=round(retried_after, 2),
        seconds_until_the_other_events_were_sent=round(others_after, 2),
    )


def test_a_429_with_an_enormous_retry_after_does_not_start_a_retry_storm(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """Rate limit on, every answer a 429 with a 23-digit Retry-After: attempts stay spaced."""
    cap = 2.0
    chaos.script = lambda req: Answer(429, b"", (("Retry-After", "9" * 23),))
    env = worker_env(
        redis_url, chaos.url, LIMECHAT_RATE_LIMIT="50/s", LIMECHAT_RETRY_MAX_SECONDS=str(cap)
    )
    with running_worker(env):
        producer.send_event("order_placed", phone=PHONE, data={"seq": 0})
        wait_for(lambda: chaos.snapshot(), 20, "the first 429")
        time.sleep(2 * cap + 0.5)  # the window in which the requests are counted
        requests = len(chaos.snapshot())
    # Then at most one request per capped pause (plus the first)
    assert requests <= 4, f"{requests} requests in {2 * cap + 0.5:g} s for one event"
    record("429 with a 23-digit Retry-After", requests_in_4_5_s=requests, retry_cap=cap)


def test_a_retry_after_too_big_for_a_float_or_in_odd_digits_is_handled_like_any_other(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """400 digits (more than a float holds) and a superscript two: retried, not dead-lettered."""
    chaos.script = scripted(
        {
            0: [lambda: Answer(503, b"", (("Retry-After", "9" * 400),))],
            1: [lambda: Answer(503, b"", (("Retry-After", "\u00b2"),))],
        }
    )
    env = worker_env(redis_url, chaos.url, LIMECHAT_RETRY_MAX_SECONDS="1")
    with running_worker(env):
        producer.send_events(items([0, 1]))
        wait_settled([0, 1], chaos, r, 20, "the 503s and their retries")
    assert [(e["reason"], e["error"]) for e in dead_letters(r)] == []
    assert sorted(req.outcome for req in chaos.snapshot()) == ["200", "200", "503", "503"]
