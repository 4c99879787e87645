"""LIMECHAT_RATE_LIMIT and LIMECHAT_RATE_BURST."""

from __future__ import annotations

import pytest

from producer import ConfigError
from worker.ratelimit import Rate, parse_rate
from worker.settings import Settings

CREDS = {"LIMECHAT_ACCESS_TOKEN": "tok", "LIMECHAT_ACCOUNT_ID": "acct"}


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("10/s", 10.0),
        ("600/m", 10.0),
        ("36000/h", 10.0),
        ("0.5/s", 0.5),
        (" 5 / min ", 5 / 60),
        ("1/h", 1 / 3600),
        ("100000/s", 100_000.0),
    ],
)
def test_rates(text: str, per_second: float) -> None:
    rate = parse_rate(text, burst=3)
    assert rate is not None
    assert rate.per_second == pytest.approx(per_second)
    assert rate.tolerance == pytest.approx(2 / per_second)


@pytest.mark.parametrize("text", ["off", "OFF", "none", "unlimited"])
def test_off(text: str) -> None:
    assert parse_rate(text, burst=1) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10", "must look like"),
        ("10/d", "must look like"),
        ("fast", "must look like"),
        ("0/s", "above zero"),
        ("200000/s", "above 100000/s"),
        ("-1/s", "must look like"),
    ],
)
def test_bad_rates_name_the_variable(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rate(text, burst=1)
    assert "LIMECHAT_RATE_LIMIT" in str(err.value) and says in str(err.value)


def test_settings_default_and_errors() -> None:
    assert Settings.from_env(CREDS).rate == Rate(10.0, 5)
    assert Settings.from_env({**CREDS, "LIMECHAT_RATE_LIMIT": "off"}).rate is None
    with pytest.raises(ConfigError, match="LIMECHAT_RATE_BURST"):
        Settings.from_env({**CREDS, "LIMECHAT_RATE_BURST": "0"})
    with pytest.raises(ConfigError, match="LIMECHAT_RATE_LIMIT"):
        Settings.from_env({**CREDS, "LIMECHAT_RATE_LIMIT": "lots"})
