"""The benchmark harness still runs: ``python -m bench.run --quick`` end to end, no timings judged.

It starts its own receiver and worker processes and uses the test Redis database (not the
benchmarks' own), so it runs wherever the integration tests run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import SCENARIOS
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


def run_bench(redis_url: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<args>`` on the test database, as a user would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMECHAT_", "SENTRY_"))}
    env["LIMECHAT_BENCH_REDIS_URL"] = redis_url
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def test_quick_bench_runs_every_scenario(redis_url: str, tmp_path: Path) -> None:
    result = run_bench(redis_url, "bench.run", "--quick", "--out", str(tmp_path), timeout=150)
    lines = result.stdout.splitlines()
    missing = [s for s in SCENARIOS if not any(line.startswith(s) for line in lines)]
    assert not missing, f"scenario rows missing: {missing}\n{result.stdout[-4000:]}"
    assert (tmp_path / "table.md").exists()
    assert (tmp_path / "results.json").exists()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "throughput.png").stat().st_size > 0
        assert (tmp_path / "rss.png").stat().st_size > 0


def test_kill_stress_runs_and_loses_nothing(redis_url: str) -> None:
    args = ("bench.kill_stress", "--events", "300", "--kills", "2", "--runs", "1")
    result = run_bench(redis_url, *args, timeout=120)
    assert "lost in all: 0 in 2 kills" in result.stdout, result.stdout


def test_console_pages_bench_runs(redis_url: str) -> None:
    result = run_bench(
        redis_url, "bench.console_pages", "--entries", "3000", "--rounds", "2", timeout=120
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| filter")]
    assert len(rows) == 4, result.stdout
