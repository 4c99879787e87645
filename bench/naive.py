"""The baseline: the Celery task users would otherwise write (the "naive task" of issue 6).

    python -m bench.naive worker --pool threads --concurrency 16
    python -m bench.naive worker                  (Celery's default: prefork, one per core)

It is exactly what the issue describes and nothing more: its own Celery app on the benchmark
Redis database with a queue of its own, ``autoretry_for=(requests.RequestException,)``,
``retry_backoff=True``, ``acks_late=True``, and a ``requests.post`` (a new connection each
time, as ``requests.post`` does) to ``NAIVE_RECEIVER_URL``. ``raise_for_status()`` is what
makes a 5xx an exception, so that it is retried at all. Everything else is Celery's default
(prefetch multiplier 4, ``max_retries`` 3, backoff cap 600 s with jitter, log level WARNING).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import requests
from celery import Celery, signals

from bench.common import BENCH_REDIS_URL
from tests.helpers import TEST_ACCOUNT, TEST_TOKEN

QUEUE = "bench:naive"

app = Celery("naive", broker=BENCH_REDIS_URL)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)

RECEIVER_URL = os.environ.get("NAIVE_RECEIVER_URL", "http://127.0.0.1:8765/api/v1/cvf-events")
HEADERS = {"x-limechat-uat": TEST_TOKEN, "x-fb-account-id": TEST_ACCOUNT}


@app.task(
    name="naive.send_custom_event",
    autoretry_for=(requests.RequestException,),
    retry_backoff=True,
    acks_late=True,
)
def send_custom_event(body: dict[str, Any]) -> None:
    response = requests.post(RECEIVER_URL, json=body, headers=HEADERS, timeout=10)
    response.raise_for_status()


def main() -> None:
    """``python -m bench.naive worker [celery worker options]``: a worker on the naive queue."""

    @signals.worker_ready.connect(weak=False)
    def ready(**_: Any) -> None:  # the benchmark waits for this line (nothing else is logged)
        print("naive worker ready", flush=True)

    argv = sys.argv[1:] or ["worker"]
    app.worker_main([*argv, f"--queues={QUEUE}", "--loglevel=WARNING", "--hostname=naive@%h"])


if __name__ == "__main__":
    main()
