"""What operator tools read from the environment: no credentials, the worker's own parsing."""

from __future__ import annotations

import pytest

from producer.errors import ConfigError
from worker.settings import OperatorSettings, Settings, defaults

CREDENTIALS = {"LIMECHAT_ACCESS_TOKEN": "t", "LIMECHAT_ACCOUNT_ID": "a"}


def test_operator_settings_need_no_credentials_and_share_the_worker_defaults() -> None:
    found = OperatorSettings.from_env({})
    d = defaults()
    assert (found.rate_limit, found.rate_burst, found.batch_size, found.account_id) == (
        d["rate_limit"],
        d["rate_burst"],
        d["batch_size"],
        None,
    )
    assert OperatorSettings.from_env({"LIMECHAT_ACCOUNT_ID": " a-1 "}).account_id == "a-1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LIMECHAT_RATE_LIMIT", "fast"),
        ("LIMECHAT_RATE_LIMIT", "0/s"),
        ("LIMECHAT_RATE_BURST", "many"),
        ("LIMECHAT_RATE_BURST", "0"),
        ("LIMECHAT_BATCH_SIZE", "lots"),
        ("REDIS_URL", "http://x"),
    ],
)
def test_a_bad_value_names_its_variable_for_operators_and_workers_alike(
    variable: str, value: str
) -> None:
    for parse in (OperatorSettings.from_env, Settings.from_env):
        with pytest.raises(ConfigError, match=variable):
            parse({**CREDENTIALS, variable: value})


def test_worker_settings_without_credentials_only_for_checking() -> None:
    with pytest.raises(ConfigError, match="LIMECHAT_ACCESS_TOKEN"):
        Settings.from_env({})
    checked = Settings.from_env({"LIMECHAT_RATE_LIMIT": "5/s"}, need_credentials=False)
    assert (checked.access_token, checked.account_id, checked.rate_limit) == ("", "", "5/s")
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        Settings.from_env({"LOG_LEVEL": "loud"}, need_credentials=False)
