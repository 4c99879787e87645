"""Idempotency keys are per account, and ``account=None`` is the default account when known."""

from __future__ import annotations

import pytest
import redis

from producer import Producer, ProducerSettings, contract

pytestmark = pytest.mark.integration

PHONE = "+915673412780"


def test_none_and_the_default_account_named_share_one_scope(redis_url: str, r: redis.Redis) -> None:
    # Given a web app that knows the workers' default account (LIMECHAT_ACCOUNT_ID)
    env = {"REDIS_URL": redis_url, "LIMECHAT_ACCOUNT_ID": "acct-1"}
    producer = Producer(ProducerSettings.from_env(env))
    # When it sends with account=None, then names the account, with one key
    first = producer.send_event("order_placed", phone=PHONE, idempotency_key="order-9")
    again = producer.send_event(
        "order_placed", phone=PHONE, account="acct-1", idempotency_key="order-9"
    )
    # Then it is one event
    assert again == first
    assert r.llen(contract.QUEUE) == 1
    # and another account is another scope
    other = producer.send_event(
        "order_placed", phone=PHONE, account="acct-2", idempotency_key="order-9"
    )
    assert other != first and r.llen(contract.QUEUE) == 2
    producer.close()


def test_colons_in_accounts_and_keys_never_make_two_pairs_one(
    producer: Producer, r: redis.Redis
) -> None:
    a = producer.send_event("order_placed", phone=PHONE, account="shop:in", idempotency_key="1")
    b = producer.send_event("order_placed", phone=PHONE, account="shop", idempotency_key="in:1")
    assert a != b and r.llen(contract.QUEUE) == 2
