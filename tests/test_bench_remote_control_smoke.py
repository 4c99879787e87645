"""``python -m bench.remote_control`` still runs end to end (a tiny run; no timing judged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_bench_smoke import run_bench

pytestmark = pytest.mark.integration


def test_the_remote_control_bench_runs_every_mode(redis_url: str, tmp_path: Path) -> None:
    args = ("--rounds", "1", "--events", "100", "--idle-seconds", "1", "--out", str(tmp_path))
    result = run_bench(redis_url, "bench.remote_control", *args, timeout=240)
    assert "| idle: Redis commands/s |" in result.stdout
    assert "| deliver: worker CPU per event (ms) |" in result.stdout
    runs = json.loads((tmp_path / "remote_control.json").read_text())
    assert [r["mode"] for r in runs] == ["off", "on", "on, pinged every 1 s"]
    assert all(r["delivered"] == 100 for r in runs)
    assert runs[2]["pings_answered"].split("/")[0] != "0"  # (the worker answered, when on)
