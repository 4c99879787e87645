"""How long the console takes to draw a page of dead letters when the DLQ holds 100,000.

    python -m bench.console_pages [--entries 100000] [--rounds 20]

Fills a private database (LIMECHAT_BENCH_REDIS_URL, default db 14) by pipeline: 99 in 100
entries ``order_placed`` 503s (exhausted), 1 in 100 ``signup`` 401s (auth). Then times each
page through Flask's test client (rendering alone) and over HTTP from ``limechat-events
web``'s own server (a real socket, Basic auth): the first page, a page in the middle reached
by its cursor, and filtered pages. Prints the median and the slowest of each, in ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import redis

from bench.common import BENCH_REDIS_URL, fresh_redis, git_revision, machine
from producer import contract
from producer.envelope import new_event
from worker.console import ConsoleSettings, create_app, serve
from worker.deadletter import DeadLetters, make_entry
from worker.operations import Ops
from worker.operations.dlq import encode_cursor
from worker.outcome import Reason
from worker.settings import OperatorSettings

PASSWORD = "bench-password"
DATA = {"order_id": "98765", "total_amount": "$199", "currency": "INR"}


def fill(client: redis.Redis, count: int) -> float:
    """``count`` dead letters, one pipelined script call each (as DeadLetters.add makes)."""
    dead = DeadLetters(client)
    keys = [
        contract.DLQ_INDEX,
        contract.DLQ_ENTRIES,
        contract.DLQ_REASONS,
        contract.DLQ_REASON_COUNTS,
    ]
    started = time.perf_counter()
    base = time.time() - count
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + 1000)):
            rare = i % 100 == 0
            name, reason, status = (
                ("signup", Reason.AUTH, 401) if rare else ("order_placed", Reason.EXHAUSTED, 503)
            )
            event = new_event(name, "+915673412780", "915673412780", DATA, None)
            event["attempts"] = 3
            event["history"] = [{"at": base + i, "status": status, "error": "", "ms": 40}] * 3
            entry = make_entry(
                event,
                reason,
                status=status,
                response_body="{}",
                error="Service Unavailable",
                now=base + i,
            )
            dead._add(
                keys=keys,
                args=[event["id"], repr(base + i), reason.value, json.dumps(entry)],
                client=pipe,
            )
        pipe.execute()
    return time.perf_counter() - started


def timed(get: Callable[[], Any], rounds: int) -> tuple[float, float]:
    get()  # (warm: templates compiled, connections open)
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        get()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), max(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    client = fresh_redis()
    print(f"machine: {machine()}; revision {git_revision()}")
    print(f"filled {args.entries} entries in {fill(client, args.entries):.1f}s")
    middle_id, middle_at = client.zrange(
        contract.DLQ_INDEX, args.entries // 2, args.entries // 2, withscores=True
    )[0]
    cursor = encode_cursor((middle_at, middle_id))
    pages = {
        "first page (newest, 50)": "/dlq",
        "first page (newest, 200)": "/dlq?limit=200",
        "middle page by cursor (50)": f"/dlq?cursor={cursor}",
        "filter reason=auth (1%, 50)": "/dlq?reason=auth",
        "filter event=signup (1%, 50)": "/dlq?event=signup",
        "filter status=4xx (1%, 50)": "/dlq?status=4xx",
        "filter since=30m (50)": "/dlq?since=30m",
    }
    app = create_app(
        Ops(OperatorSettings(redis_url=BENCH_REDIS_URL)), ConsoleSettings(password=PASSWORD)
    )
    auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
    test_client = app.test_client()
    server = serve.server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = serve.url(server, "127.0.0.1").rstrip("/")

    def over_http(path: str) -> None:
        with urllib.request.urlopen(urllib.request.Request(url + path, headers=auth)) as got:
            assert got.status == 200
            got.read()

    def in_process(path: str) -> None:
        answer = test_client.get(path, headers=auth)
        assert answer.status_code == 200, answer.text[:300]

    print("\n| page | test client median / max (ms) | HTTP median / max (ms) |")
    print("|---|---|---|")
    for label, path in pages.items():
        local = timed(lambda p=path: in_process(p), args.rounds)
        http = timed(lambda p=path: over_http(p), args.rounds)
        print(f"| {label} | {local[0]:.0f} / {local[1]:.0f} | {http[0]:.0f} / {http[1]:.0f} |")
    server.shutdown()
    fresh_redis()


if __name__ == "__main__":
    main()
