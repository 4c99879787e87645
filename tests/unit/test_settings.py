"""Settings come from the environment, once, and a bad value names its variable."""

from __future__ import annotations

import pytest

from producer import ConfigError, ProducerSettings
from producer.config import redacted_url
from worker.settings import Settings

CREDS = {"LIMECHAT_ACCESS_TOKEN": "tok", "LIMECHAT_ACCOUNT_ID": "acct"}


def test_defaults() -> None:
    s = Settings.from_env(CREDS)
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.api_url == "https://flow-builder.limechat.ai/api/v1/cvf-events"
    assert (s.max_attempts, s.retry_base_seconds, s.retry_max_seconds) == (12, 2.0, 600.0)
    assert (s.timeout_seconds, s.visibility_timeout, s.concurrency) == (10.0, 300.0, 16)


def test_missing_credentials_are_all_named() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({})
    assert "LIMECHAT_ACCESS_TOKEN and LIMECHAT_ACCOUNT_ID" in str(err.value)
    with pytest.raises(ConfigError, match="missing LIMECHAT_ACCOUNT_ID"):
        Settings.from_env({"LIMECHAT_ACCESS_TOKEN": "tok"})


def test_floats_are_allowed_for_seconds() -> None:
    s = Settings.from_env(
        {**CREDS, "LIMECHAT_RETRY_BASE_SECONDS": "0.05", "LIMECHAT_RETRY_MAX_SECONDS": "1.5"}
    )
    assert (s.retry_base_seconds, s.retry_max_seconds) == (0.05, 1.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LIMECHAT_MAX_ATTEMPTS", "ten"),
        ("LIMECHAT_MAX_ATTEMPTS", "0"),
        ("LIMECHAT_RETRY_BASE_SECONDS", "fast"),
        ("LIMECHAT_RETRY_MAX_SECONDS", "nan"),
        ("LIMECHAT_TIMEOUT_SECONDS", "-1"),
        ("LIMECHAT_VISIBILITY_TIMEOUT", "0"),
        ("LIMECHAT_WORKER_CONCURRENCY", "1.5"),
        ("LIMECHAT_API_URL", "ftp://example.com"),
        ("REDIS_URL", "localhost:6379"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**CREDS, name: value})
    assert name in str(err.value)


def test_cap_below_base_is_refused() -> None:
    with pytest.raises(ConfigError, match="LIMECHAT_RETRY_MAX_SECONDS"):
        Settings.from_env(
            {**CREDS, "LIMECHAT_RETRY_BASE_SECONDS": "5", "LIMECHAT_RETRY_MAX_SECONDS": "1"}
        )


def test_the_token_is_not_in_the_repr() -> None:
    s = Settings.from_env({**CREDS, "LIMECHAT_ACCESS_TOKEN": "s3cret-token"})
    assert "s3cret-token" not in repr(s)


def test_producer_settings() -> None:
    s = ProducerSettings.from_env({"LIMECHAT_ENQUEUE_TIMEOUT_SECONDS": "0.2"})
    assert s.enqueue_timeout == 0.2
    with pytest.raises(ConfigError, match="LIMECHAT_BATCH_SIZE"):
        ProducerSettings.from_env({"LIMECHAT_BATCH_SIZE": "0"})


def test_redis_password_is_redacted() -> None:
    assert redacted_url("redis://:hunter2@host:6379/0") == "redis://:***@host:6379/0"
    assert redacted_url("rediss://user:hunter2@host/1") == "rediss://user:***@host/1"
    assert redacted_url("redis://host:6379/0") == "redis://host:6379/0"
