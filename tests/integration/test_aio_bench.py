"""bench/webapp_overhead.py still runs (0.2 s per mode: its figures mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.webapp_overhead import MODES
from tests.helpers import ROOT
from tests.integration.shop_support import DATABASE_URL

pytestmark = pytest.mark.integration


def test_the_webapp_overhead_benchmark_runs_and_reports_each_mode(redis_url: str) -> None:
    env = {
        **os.environ,
        "LIMECHAT_BENCH_REDIS_URL": redis_url,
        "LIMECHAT_BENCH_DATABASE_URL": DATABASE_URL,
    }
    args = ["--seconds", "0.2", "--json", "--modes", ",".join(MODES)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.webapp_overhead", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["mode"] for row in rows] == list(MODES)
    for row in rows:
        assert row["requests"] == 40
        assert 0 <= row["producer_p50_ms"] <= row["producer_p99_ms"] < row["request_p99_ms"]
