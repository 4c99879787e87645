"""The rate limit as the README describes it, end to end with real workers: a slot more than
1 s away parks the event (no attempt counted) until 0.5 s before it; a 429 without Retry-After
pauses the account for 5 s and ``stats`` says the rate is slowed; ``off`` makes no Redis call.

Times are the receiver's (this process's monotonic clock) and Redis' own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import Producer, ProducerSettings, contract
from tests.chaos.receiver import Action, Answer, ChaosReceiver, Received
from tests.chaos.redis_server import RedisServer
from tests.chaos.support import dead_seqs, nothing_held
from tests.helpers import TEST_ACCOUNT, run_cli, running_worker, wait_for, worker_env
from tests.observe import RedisMonitor
from worker.schedule import parked
from worker.stats import snapshot

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


@pytest.fixture
def receiver() -> Iterator[ChaosReceiver]:
    chaos = ChaosReceiver()
    yield chaos
    chaos.stop()


def test_a_slot_more_than_a_second_away_parks_the_event_until_half_a_second_before_it(
    redis_url: str, r: redis.Redis, producer: Producer, receiver: ChaosReceiver
) -> None:
    # Given one request a second (burst 1) and four threads
    env = worker_env(redis_url, receiver.url, LIMECHAT_RATE_LIMIT="1/s", LIMECHAT_RATE_BURST="1")
    seen: dict[str, dict[str, object]] = {}  # event id -> what `retries list` said, and when
    with running_worker(env) as worker:
        # When four events arrive at once (slots now, +1 s, +2 s, +3 s)
        ids = [producer.send_event("e", phone=PHONE, data={"seq": s}) for s in range(4)]
        # Then the ones whose slot is more than 1 s away are parked, waiting for it
        deadline = time.monotonic() + 30
        while len(receiver.delivered_seqs()) < 4 and time.monotonic() < deadline:
            before = time.monotonic()
            entries = parked(r, 100)
            read_at = (before + time.monotonic()) / 2  # (when Redis' clock was read, about)
            for entry in entries:
                if str(entry["event_id"]) not in seen:
                    due_in = float(entry["due_in_seconds"])  # type: ignore[arg-type]
                    seen[str(entry["event_id"])] = {**entry, "due_at": read_at + due_in}
            time.sleep(0.01)
        assert receiver.delivered_seqs() == {0, 1, 2, 3}, receiver.outcomes()
        wait_for(lambda: nothing_held(r), 10, "every message acknowledged")
        logs = worker.text()
    assert len(seen) >= 2, f"expected the +2 s and +3 s events parked, saw {seen}"
    arrivals = {r_.body["data"]["seq"]: r_.at for r_ in receiver.snapshot()}
    for event_id, entry in seen.items():
        seq = ids.index(event_id)
        assert entry["why"] == "waiting for its rate-limit slot", entry
        assert entry["attempts"] == 0, "parking for a slot must not count an attempt"
        # It came back due 0.5 s before its slot, and was sent at its slot
        lead = arrivals[seq] - float(entry["due_at"])  # type: ignore[arg-type]
        assert 0.3 < lead < 0.9, f"sent {lead:.2f}s after it came due, expected about 0.5s"
        assert f"delivered evt={event_id} event=e status=200 attempt=1 " in logs
    # Each event was sent once, at the rate: slots a second apart
    assert sorted(receiver.deliveries().values()) == [1, 1, 1, 1]
    times = sorted(arrivals.values())
    assert all(b - a > 0.8 for a, b in itertools.pairwise(times)), times
    assert snapshot(r, None, None)["counters"]["retried"] == 0


def test_a_429_without_retry_after_pauses_the_account_for_5_s_and_stats_says_slowed(
    redis_url: str, r: redis.Redis, producer: Producer, receiver: ChaosReceiver
) -> None:
    # Given a receiver whose first answer is a 429 without Retry-After
    lock = threading.Lock()
    answered: list[Received] = []

    def first_429(req: Received) -> Action:
        with lock:
            answered.append(req)
            first = len(answered) == 1
        return Answer(429, {"error": "slow down"}) if first else Answer()

    receiver.script = first_429
    rate = {"LIMECHAT_RATE_LIMIT": "20/s", "LIMECHAT_RATE_BURST": "5"}
    env = worker_env(redis_url, receiver.url, **rate)
    stats_env = {**env, "LIMECHAT_ACCOUNT_ID": TEST_ACCOUNT}
    seqs = list(range(30))
    with running_worker(env):
        # When events keep coming
        for seq in seqs:
            producer.send_event("e", phone=PHONE, data={"seq": seq})
        wait_for(lambda: answered, 20, "the first request")
        # Then stats shows the pause and the slowed rate (halved: 10/s)
        shown = run_cli(stats_env, "stats")
        assert shown.returncode == 0, shown.stderr
        assert "PAUSED for" in shown.stdout and "slowed by 429s to 10/s" in shown.stdout, (
            shown.stdout
        )
        wait_for(lambda: receiver.delivered_seqs() == set(seqs), 40, "every event delivered")
        wait_for(lambda: nothing_held(r), 10, "every message acknowledged")
    # and, by the receiver's clock, nothing was sent for 5 s after the 429 (beyond what had
    # passed the gate before the worker read the 429)
    refused_at = answered[0].at
    after = sorted(x.at - refused_at for x in receiver.snapshot() if x.at > refused_at)
    during = [t for t in after if 0.3 < t < 4.8]
    assert not during, f"requests {during} s after the 429, during its 5 s pause"
    assert after and after[-1] >= 4.8, "deliveries resumed after the pause"
    assert set(receiver.deliveries().values()) == {1} and not dead_seqs(r)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    yield server
    server.close()


@pytest.mark.parametrize("limit", ["50/s", "off"])
def test_with_the_rate_limit_off_the_limiter_makes_no_redis_call(
    own_server: RedisServer, receiver: ChaosReceiver, limit: str
) -> None:
    """``off``: no Redis call at all for the limiter (50/s is the control: its calls are seen)."""
    sender = Producer(ProducerSettings(redis_url=own_server.url))
    monitor = RedisMonitor("127.0.0.1", own_server.port)
    try:
        with running_worker(worker_env(own_server.url, receiver.url, LIMECHAT_RATE_LIMIT=limit)):
            for seq in range(5):
                sender.send_event("e", phone=PHONE, data={"seq": seq})
            wait_for(lambda: receiver.delivered_seqs() == set(range(5)), 30, "five deliveries")
    finally:
        monitor.stop()
        sender.close()
    commands = monitor.commands()
    assert any("LPUSH" in c for c in commands), "MONITOR saw the sends"
    limiter_keys = contract.rate_keys(TEST_ACCOUNT)
    touching = [c for c in commands if any(key in c for key in limiter_keys)]
    if limit == "off":
        assert not touching, touching[:5]
    else:
        assert len(touching) >= 5, "the control: a limit on is seen calling Redis"
