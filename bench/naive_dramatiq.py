"""A baseline: the Dramatiq actor users would otherwise write (issue 12's "naive Dramatiq actor").

    python -m dramatiq bench.naive_dramatiq        (Dramatiq's defaults: a process per core,
                                                    8 threads each)

Exactly what Dramatiq's documentation shows and nothing more: a ``RedisBroker`` on the
benchmark Redis database (its own namespace, ``dramatiq``), one actor with Dramatiq's default
middleware (retries with exponential backoff, age and time limits), and a ``requests.Session``
per worker thread (keep-alive, as Dramatiq's own examples do) POSTing to ``NAIVE_RECEIVER_URL``.
``raise_for_status()`` makes a 5xx an exception, so that it is retried at all.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dramatiq
import requests
from dramatiq.brokers.redis import RedisBroker

from bench.common import BENCH_REDIS_URL
from tests.helpers import TEST_ACCOUNT, TEST_TOKEN

broker = RedisBroker(url=BENCH_REDIS_URL)
dramatiq.set_broker(broker)

RECEIVER_URL = os.environ.get("NAIVE_RECEIVER_URL", "http://127.0.0.1:8765/api/v1/cvf-events")
HEADERS = {"x-limechat-uat": TEST_TOKEN, "x-fb-account-id": TEST_ACCOUNT}
_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False
    return session


@dramatiq.actor(queue_name="bench-naive")
def send_custom_event(body: dict[str, Any]) -> None:
    response = _session().post(RECEIVER_URL, json=body, headers=HEADERS, timeout=10)
    response.raise_for_status()
