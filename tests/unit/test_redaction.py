"""Passwords in Redis URLs, redacted for messages; idempotency keys that cannot collide."""

from __future__ import annotations

import pytest

from producer import Producer, contract
from producer.config import ProducerSettings, redacted_url, url_secrets
from worker.app import broker_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:hunter2@host/0", "redis://user:***@host/0"),
        ("redis://host/0?password=hunter2&db=1", "redis://host/0?password=***&db=1"),
        ("redis://host/0?PassWord=hunter2", "redis://host/0?PassWord=***"),
        (
            "rediss://host/0?ssl_password=k3y&ssl_cert_reqs=none",
            "rediss://host/0?ssl_password=***&ssl_cert_reqs=none",
        ),
        ("unix:///run/redis.sock?password=hunter2", "unix:///run/redis.sock?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redacted_url_hides_every_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_url_secrets_lists_every_form_of_every_password() -> None:
    secrets = url_secrets("redis://:p%40ss@host/0?password=q%26w&ssl_password=k")
    assert set(secrets) == {"p%40ss", "p@ss", "q%26w", "q&w", "k"}
    assert secrets == sorted(secrets, key=len, reverse=True)  # (longest replaced first)


def test_the_broker_url_carries_the_password_kombu_can_read() -> None:
    assert broker_url("redis://h:1/0?password=a%2Fb&socket_timeout=5&ssl_cert_reqs=none") == (
        "redis://:a%2Fb@h:1/0?ssl_cert_reqs=none"
    )
    assert broker_url("redis://:x@h:1/0") == "redis://:x@h:1/0"


def test_producer_settings_repr_hides_the_url() -> None:
    assert "hunter2" not in repr(ProducerSettings(redis_url="redis://:hunter2@h/0"))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("a:b", "c"), ("a", "b:c")),
        ((None, "1:x"), ("1", "x")),
        (("", "k"), ("0", "k")),
    ],
)
def test_no_two_account_and_key_pairs_share_a_redis_key(
    a: tuple[str | None, str], b: tuple[str | None, str]
) -> None:
    assert contract.idempotency_key(*a) != contract.idempotency_key(*b)


@pytest.mark.parametrize("cut", ["#", "/", "?"])
def test_an_unencoded_password_is_refused_without_being_shown(cut: str) -> None:
    from producer.config import redis_url
    from producer.errors import ConfigError

    url = f"redis://:hun{cut}ter2@redis.internal:6379/0"
    with pytest.raises(ConfigError) as refused:
        redis_url({"REDIS_URL": url})
    assert "percent-encoded" in str(refused.value)
    assert "ter2" not in str(refused.value) and "ter2" not in redacted_url(url)
    # (as written, redis-py would read another host or database: it must never get it)
    with pytest.raises(ConfigError):
        Producer(ProducerSettings(redis_url=url))
