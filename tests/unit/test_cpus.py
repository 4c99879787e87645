"""The default number of worker processes: the CPUs this process may use, quota included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.cpus import available_cpus, cgroup_quota


@pytest.mark.parametrize(
    ("content", "quota"),
    [
        ("max 100000\n", None),
        ("100000 100000\n", 1),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("400000 100000\n", 4),
        ("garbage\n", None),
        ("100000 0\n", None),
    ],
)
def test_the_cgroup_quota_in_whole_cpus_rounded_up(
    tmp_path: Path, content: str, quota: int | None
) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cgroup_quota(cpu_max) == quota


def test_no_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path / "absent") is None
    assert available_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_a_quota_below_the_affinity_mask_wins(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text(f"{1000 * 100000} 100000\n")  # a quota above what the mask allows
    assert available_cpus(cpu_max) == len(os.sched_getaffinity(0))
