"""A baseline: the arq job users would otherwise write (issue 12's "naive arq job").

    .venv-arq/bin/arq bench.naive_arq.WorkerSettings     the worker (arq's defaults but
                                                          ``max_jobs``, see below)
    .venv-arq/bin/python -m bench.naive_arq enqueue N     N jobs, one event each

arq pins ``redis<6``, which our own floor (6.4) refuses, so it cannot share our virtualenv:
``make bench-arq`` gives it one of its own (``.venv-arq``), and this module imports nothing of
ours. One ``httpx.AsyncClient`` per worker (keep-alive, as arq's documentation shows), made in
``on_startup``; ``raise_for_status()`` makes a 5xx an exception, so arq retries it.
``max_jobs=50`` as issue 12 measured it (arq's default is 10).

Settings come from the environment: ``LIMECHAT_BENCH_REDIS_URL``, ``NAIVE_RECEIVER_URL``,
``NAIVE_TOKEN``, ``NAIVE_ACCOUNT``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import httpx
from arq import create_pool
from arq.connections import RedisSettings

REDIS = RedisSettings.from_dsn(
    os.environ.get("LIMECHAT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
)
RECEIVER_URL = os.environ.get("NAIVE_RECEIVER_URL", "http://127.0.0.1:8765/api/v1/cvf-events")
HEADERS = {
    "x-limechat-uat": os.environ.get("NAIVE_TOKEN", "test-token-5e3f9c1d-never-log-me"),
    "x-fb-account-id": os.environ.get("NAIVE_ACCOUNT", "acct-123"),
}
PHONE = "+915673412780"


async def startup(ctx: dict[str, Any]) -> None:
    ctx["http"] = httpx.AsyncClient(timeout=10)
    print("naive arq worker ready", flush=True)


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["http"].aclose()


async def send_custom_event(ctx: dict[str, Any], body: dict[str, Any]) -> None:
    response = await ctx["http"].post(RECEIVER_URL, json=body, headers=HEADERS)
    response.raise_for_status()


class WorkerSettings:
    functions = [send_custom_event]  # noqa: RUF012 (arq's documented form)
    redis_settings = REDIS
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 50


async def enqueue(count: int, gap: float = 0.0) -> None:
    pool = await create_pool(REDIS)
    for i in range(count):
        body = {
            "distinct_id": PHONE[1:],
            "phone": PHONE,
            "event": "bench",
            "data": {"i": i, "order_id": f"order-{i}", "currency": "INR", "bench_t": time.time()},
        }
        await pool.enqueue_job("send_custom_event", body)
        if gap:
            await asyncio.sleep(gap)
    await pool.aclose()


if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue"]:
        asyncio.run(enqueue(int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
        print("enqueued", flush=True)
