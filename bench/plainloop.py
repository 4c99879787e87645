"""The ceiling: a plain loop of ``requests.Session.post`` calls, no queue at all.

    python -m bench.plainloop URL COUNT

POSTs COUNT events, one after the other on one keep-alive session, with the same body and
headers our worker sends (``bench_t`` in ``data`` is the time of the call, for latency).
Prints how many were answered 2xx. Throughput is measured at the receiver, like the others.
"""

from __future__ import annotations

import sys
import time

import requests

from tests.helpers import TEST_ACCOUNT, TEST_TOKEN

PHONE = "+915673412780"
HEADERS = {
    "Content-Type": "application/json",
    "x-limechat-uat": TEST_TOKEN,
    "x-fb-account-id": TEST_ACCOUNT,
}


def body(i: int) -> dict[str, object]:
    return {
        "distinct_id": PHONE[1:],
        "phone": PHONE,
        "event": "bench",
        "data": {"i": i, "bench_t": time.time()},
    }


def run(url: str, count: int, pause: float = 0.0) -> int:
    session = requests.Session()
    session.trust_env = False
    ok = 0
    for i in range(count):
        response = session.post(url, json=body(i), headers=HEADERS, timeout=10)
        if response.ok:
            ok += 1
        if pause:
            time.sleep(pause)
    session.close()
    return ok


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    print(f"ok {run(url, count, pause)}", flush=True)


if __name__ == "__main__":
    main()
