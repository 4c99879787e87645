"""How long replaying (and purging) a large dead-letter queue takes.

    python -m bench.dlq_replay [--entries 100000]

Fills the DLQ with realistic entries (LimeChat's order_placed example, three failed attempts),
then times `DeadLetters.replay()` of all of them back onto the queue, and a purge of as many.
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import fresh_redis, git_revision, machine
from producer import contract
from producer.envelope import new_event
from worker.deadletter import DeadLetters, make_entry
from worker.outcome import Reason

DATA = {
    "order_id": "98765",
    "total_amount": "$199",
    "products": [{"product_id": "12345", "quantity": 2}, {"product_id": "67890", "quantity": 1}],
    "currency": "INR",
}


def fill(dead: DeadLetters, count: int) -> float:
    started = time.perf_counter()
    client = dead._redis
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(start, min(count, start + 1000)):
            event = new_event("order_placed", "+915673412780", "915673412780", DATA, None)
            event["attempts"] = 3
            event["history"] = [{"at": time.time(), "status": 503, "error": "", "ms": 40}] * 3
            now = time.time()
            entry = make_entry(
                event,
                Reason.EXHAUSTED,
                status=503,
                response_body="",
                error="Service Unavailable",
                now=now,
            )
            # DeadLetters.add makes one round trip per entry; pipeline the same script here.
            dead._add(
                keys=[
                    contract.DLQ_INDEX,
                    contract.DLQ_ENTRIES,
                    contract.DLQ_REASONS,
                    contract.DLQ_REASON_COUNTS,
                ],
                args=[event["id"], repr(now), Reason.EXHAUSTED.value, json.dumps(entry)],
                client=pipe,
            )
        pipe.execute()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    client = fresh_redis()
    dead = DeadLetters(client)
    print(f"machine: {machine()}; revision {git_revision()}")
    filled = fill(dead, args.entries)
    print(f"filled {dead.count()} entries in {filled:.1f}s")
    started = time.perf_counter()
    replayed = dead.replay()
    took = time.perf_counter() - started
    print(
        f"replayed {replayed} entries in {took:.2f}s ({replayed / took:,.0f}/s); "
        f"queue now holds {client.llen(contract.QUEUE)} batch messages, DLQ {dead.count()}"
    )
    client.delete(contract.QUEUE)
    fill(dead, args.entries)
    started = time.perf_counter()
    purged = dead.purge()
    took = time.perf_counter() - started
    print(f"purged {purged} entries in {took:.2f}s ({purged / took:,.0f}/s)")
    fresh_redis()


if __name__ == "__main__":
    main()
