"""The cap on one account's requests in flight, and the pacing of the events it turns away."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from worker.inflight import HORIZON_SECONDS, MIN_SPACING_SECONDS, AccountLoad, default_cap


def test_the_automatic_cap_is_off_for_one_account_and_a_quarter_of_the_threads_for_several() -> (
    None
):
    assert default_cap(16, 1, 0) is None
    assert default_cap(16, 2, 0) == 4
    assert default_cap(2, 10, 0) == 1
    assert default_cap(16, 1, 3) == 3  # set by the operator: applies even to one account


def test_an_account_at_its_cap_is_turned_away_while_another_is_not() -> None:
    load = AccountLoad(lambda: 2)
    assert load.claim("a") and load.claim("a")
    assert not load.claim("a")
    assert load.in_flight("a") == 2  # (the refused claim counted nothing)
    assert load.claim("b")
    load.release("a")
    assert load.claim("a")


def test_no_cap_never_turns_away() -> None:
    load = AccountLoad(lambda: None)
    assert all(load.claim("a") for _ in range(1000))


def test_claims_from_many_threads_never_exceed_the_cap() -> None:
    load = AccountLoad(lambda: 3)
    granted: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def take() -> None:
        start.wait()
        got = load.claim("a")
        with lock:
            granted.append(got)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 3 and load.in_flight("a") == 3


def test_turned_away_events_come_back_spaced_by_request_time_over_the_cap() -> None:
    now = [100.0]
    load = AccountLoad(lambda: 4, clock=lambda: now[0])
    # Requests of 2 s: four at a time make one every 0.5 s, after those already handed out
    load.observe("a", 2.0)
    assert load.come_back_in("a", 2) == pytest.approx([0.5, 1.0])
    assert load.come_back_in("a", 2) == pytest.approx([1.5, 2.0])
    # A faster account is paced by its own times
    load.observe("b", 0.04)
    assert load.come_back_in("b", 1) == pytest.approx([0.01])


def test_before_its_first_answer_an_account_is_paced_by_how_long_its_requests_have_been_out() -> (
    None
):
    now = [100.0]
    load = AccountLoad(lambda: 2, clock=lambda: now[0])
    assert load.claim("b") and load.claim("b") and not load.claim("b")
    # A burst turned away at once: nothing is known yet, so they come back at the shortest
    # spacing (a fixed first guess of 1 s put the sixth 3 s ahead: CI saw exactly that)
    assert load.come_back_in("b", 6) == pytest.approx(
        [MIN_SPACING_SECONDS * n for n in range(1, 7)]
    )
    # Still no answer 0.8 s on: a request takes at least that long, two at a time
    now[0] += 0.8
    assert load.come_back_in("b", 1) == pytest.approx([0.4])


def test_once_it_has_answered_a_stall_does_not_pace_an_account_by_its_requests_age() -> None:
    now = [0.0]
    load = AccountLoad(lambda: 2, clock=lambda: now[0])
    load.observe("b", 0.005)
    assert load.claim("b") and load.claim("b")
    now[0] += 1.5  # a stall: both requests out for 1.5 s
    # Paced by its answers, not by the stall (by the age, 100 turned-away events during a
    # stall parked up to 30 s ahead: the hostile review measured it with a real worker)
    delays = load.come_back_in("b", 100)
    assert delays[0] == pytest.approx(MIN_SPACING_SECONDS) and max(delays) < 1.01


def test_claim_times_stay_in_order_under_threads() -> None:
    ticks = itertools.count()

    def clock() -> float:
        now = float(next(ticks))
        time.sleep(0)  # (a thread switch here, between reading the clock and counting the claim)
        return now

    load = AccountLoad(lambda: None, clock=clock)
    start = threading.Barrier(8)

    def take() -> None:
        start.wait()
        for _ in range(500):
            load.claim("a")

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = load._out["a"]
    assert len(times) == 4000 and times == sorted(times)


def test_returns_handed_out_at_a_slow_pace_shrink_when_the_account_turns_out_fast() -> None:
    now = [0.0]
    load = AccountLoad(lambda: 2, clock=lambda: now[0])
    load.observe("b", 1.0)
    assert load.come_back_in("b", 6)[-1] == pytest.approx(3.0)  # 0.5 s apart
    for _ in range(40):  # then it answers in 5 ms
        load.observe("b", 0.005)
    # Six returns ahead at the new pace (0.01 s) take 0.06 s: the next comes after them, not
    # 3 s out behind the old pace
    assert load.come_back_in("b", 1) == pytest.approx([0.07], abs=0.005)


def test_release_without_a_claim_counts_nothing() -> None:
    load = AccountLoad(lambda: 1)
    load.release("a")
    assert load.in_flight("a") == 0 and load.claim("a") and not load.claim("a")


def test_a_backlog_is_parked_no_further_than_the_horizon_and_the_pace_moves_on_with_time() -> None:
    now = [0.0]
    load = AccountLoad(lambda: 1, clock=lambda: now[0])
    load.observe("a", 10.0)
    delays = load.come_back_in("a", 20)
    assert delays[:3] == pytest.approx([10.0, 20.0, 30.0])
    assert max(delays) == pytest.approx(HORIZON_SECONDS)
    now[0] = 100.0  # long after, still answering in 10 s: no debt is carried
    load.observe("a", 10.0)
    assert load.come_back_in("a", 1) == pytest.approx([10.0])


def test_an_average_older_than_the_horizon_is_forgotten() -> None:
    now = [0.0]
    load = AccountLoad(lambda: 2, clock=lambda: now[0])
    load.observe("a", 10.0)  # it timed out an hour ago
    now[0] = 3600.0
    assert load.claim("a") and load.claim("a")
    # Its burst now is paced by its requests out (just sent), not by the hour-old 10 s, which
    # parked 50 events up to 30 s ahead (the second review measured p50 30 s with a real worker)
    assert load.come_back_in("a", 3) == pytest.approx([0.01, 0.02, 0.03])
    # and its first answer starts a new average, not blended with the old one
    load.observe("a", 0.04)
    # (after the three handed out, 0.04 / 2 on; blended, the average would be 8 s: 4 s on)
    assert load.come_back_in("a", 1) == pytest.approx([0.03 + 0.02])


def test_requests_longer_than_the_horizon_still_pace_by_their_age() -> None:
    now = [0.0]
    load = AccountLoad(lambda: 1, clock=lambda: now[0])  # (LIMECHAT_TIMEOUT_SECONDS over 30)
    load.observe("a", 40.0)
    assert load.claim("a")
    now[0] = 35.0  # its average is stale, but the request out has taken 35 s so far
    assert load.come_back_in("a", 1) == pytest.approx([HORIZON_SECONDS])


def test_the_running_request_time_follows_the_newest_answers() -> None:
    load = AccountLoad(lambda: 1, clock=lambda: 0.0)
    load.observe("a", 10.0)
    for _ in range(30):
        load.observe("a", 0.1)
    assert load.come_back_in("a", 1)[0] < 0.2
