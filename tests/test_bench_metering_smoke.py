"""``python -m bench.metering`` still runs (on the test database); no timing is judged."""

from __future__ import annotations

import pytest

from tests.test_bench_smoke import run_bench

pytestmark = pytest.mark.integration


def test_metering_bench_runs_both_shapes(redis_url: str) -> None:
    args = ("bench.metering", "--events", "200", "--rounds", "1")
    result = run_bench(redis_url, *args, timeout=120)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[2:]] == [
        "| deliveries, 50 per pipeline",
        "| one outcome per pipeline",
    ], result.stdout
