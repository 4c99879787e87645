"""Scenario 6: an outage longer than the attempts allow ends in the DLQ; a replay delivers all."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis

from producer import Producer, contract
from tests.helpers import run_cli, running_worker, worker_env

from .figures import record
from .receiver import Action, Answer, ChaosReceiver, Received, Reset
from .support import dead_letters, send_numbered, wait_settled

pytestmark = pytest.mark.integration


def test_an_outage_past_the_attempts_dead_letters_everything_and_a_replay_delivers_it_once(
    producer: Producer, chaos: ChaosReceiver, redis_url: str, r: redis.Redis
) -> None:
    """503s and resets past LIMECHAT_MAX_ATTEMPTS: all in the DLQ with why; replay: all, once."""
    # Given LimeChat down: every request answered 503 or reset
    events, attempts = 200, 3
    down = threading.Event()
    down.set()
    html = b"<html><body>503 Service Unavailable</body></html>"

    def script(req: Received) -> Action:
        if not down.is_set():
            return Answer()
        return Reset() if req.seq % 10 == 0 else Answer(503, html, content_type="text/html")

    chaos.script = script
    env = worker_env(redis_url, chaos.url, LIMECHAT_MAX_ATTEMPTS=str(attempts))
    seqs = range(events)
    ids = send_numbered(producer, seqs)
    with running_worker(env):
        # When the outage outlasts every event's attempts
        started = time.monotonic()
        tally = wait_settled(seqs, chaos, r, 60, "every event dead-lettered")
        dead_after = time.monotonic() - started
        # Then each is in the DLQ, with the reason and the last answer, after exactly its
        # attempts
        entries = {e["event_id"]: e for e in dead_letters(r)}
        assert set(entries) == set(ids) and tally.delivered == 0
        assert {(e["reason"], e["attempts"]) for e in entries.values()} == {("exhausted", 3)}
        for e in entries.values():
            if e["event"]["data"]["seq"] % 10 == 0:
                assert e["status"] is None and "ConnectionError" in e["error"], e
            else:
                assert e["status"] == 503 and "Service Unavailable" in e["response_body"], e
        assert Counter(Counter(req.seq for req in chaos.snapshot()).values()) == {attempts: events}

        # When LimeChat is back and an operator replays the DLQ with the CLI
        down.clear()
        replayed_at = time.monotonic()
        env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
        replay = run_cli(env, "dlq", "replay", "--all")
        assert replay.returncode == 0, replay.stderr
        assert f"replayed {events} event(s)" in replay.stdout
        # (the replay took every entry off the DLQ: settled now means delivered)
        assert r.zcard(contract.DLQ_INDEX) == 0
        tally = wait_settled(seqs, chaos, r, 60, "every replayed event delivered")
        delivered_after = time.monotonic() - replayed_at

    # Then every event was delivered exactly once and the DLQ is empty
    assert chaos.deliveries() == Counter({seq: 1 for seq in seqs})
    assert r.zcard(contract.DLQ_INDEX) == 0 and r.hlen(contract.DLQ_ENTRIES) == 0
    record(
        "6 outage past the attempts, then replay",
        events=events,
        attempts_each=attempts,
        dead_lettered=len(entries),
        seconds_until_all_dead_lettered=round(dead_after, 2),
        delivered_after_replay=len(chaos.delivered_seqs()),
        duplicates=tally.duplicates,
        seconds_from_replay_to_all_delivered=round(delivered_after, 2),
    )
