"""In CI a skipped test fails (tests/conftest.py): a run with one pass and the rest skipped
must not be green.

Each case runs pytest in a subprocess on a tiny test file whose conftest takes the hooks from
tests/conftest.py, once as a developer runs it and once as ``.ci/run`` does (``CI=true``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

CONFTEST = """
from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401
"""

SAMPLE = """
import pytest


def test_passes():
    pass


def test_skips_in_its_body():
    pytest.skip("redis-server is not installed")


@pytest.fixture
def certificate():
    pytest.skip("openssl is not installed")


def test_skips_in_a_fixture(certificate):
    pass


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_an_expected_failure():
    assert False
"""

SKIPPED_MODULE = """
import pytest

pytest.skip("this redis-server was built without TLS", allow_module_level=True)


def test_never_collected():
    pass
"""


def run_pytest(directory: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    (directory / "conftest.py").write_text(CONFTEST)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(directory)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The counts on pytest's last line: ``{"passed": 1, "skipped": 2, ...}``."""
    last = result.stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def test_locally_a_missing_service_skips_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = run_pytest(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout
    assert summary(result) == {"passed": 1, "skipped": 2, "xfailed": 1}, result.stdout
    assert "redis-server is not installed" in result.stdout
    assert "openssl is not installed" in result.stdout


def test_in_ci_a_skip_in_a_test_or_a_fixture_fails_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = run_pytest(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout
    # the skip in the body fails the test; the one in a fixture is an error at setup
    assert summary(result) == {"failed": 1, "passed": 1, "xfailed": 1, "error": 1}, result.stdout
    assert re.search(r"FAILED .*test_skips_in_its_body", result.stdout), result.stdout
    assert re.search(r"ERROR .*test_skips_in_a_fixture", result.stdout), result.stdout
    for reason in ("redis-server is not installed", "openssl is not installed"):
        assert f"skipped in CI, where every service the tests need must be present: {reason}" in (
            result.stdout
        ), result.stdout


def test_in_ci_a_module_that_skips_itself_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text("def test_passes():\n    pass\n")
    (tmp_path / "test_tls.py").write_text(SKIPPED_MODULE)
    local = run_pytest(tmp_path, ci=False)
    assert local.returncode == 0 and summary(local) == {"passed": 1, "skipped": 1}, local.stdout
    ci = run_pytest(tmp_path, ci=True)
    assert ci.returncode not in (0, 5), ci.stdout
    assert "built without TLS" in ci.stdout and "error" in summary(ci), ci.stdout
