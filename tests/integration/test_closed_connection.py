"""A channel whose connection kombu has closed under it gives up restoring, without raising.

kombu closes a connection's transport (``client`` set to None) while channels opened on it
may still be closed, or rejected on, after it. Trying to reach Redis from such a channel
raised AttributeError deep in kombu: after a long Redis outage that escaped Celery's
reconnection, and the worker did not resume (docs/reliability.md, "Flakes under load").
"""

from __future__ import annotations

import json

import pytest
import redis
from kombu import Connection

from producer import contract, wire
from producer.envelope import new_event
from worker.app import broker_url

pytestmark = pytest.mark.integration


def test_restoring_on_a_closed_connection_leaves_the_record_for_the_visibility_timeout(
    redis_url: str, r: redis.Redis
) -> None:
    # Given a message recorded unacked by a channel of our transport
    conn = Connection(broker_url(redis_url), transport="worker.transport:Transport")
    try:
        channel = conn.default_channel
        message = wire.encode_message([new_event("e", "+915673412780", "d", {}, None)])
        record = json.dumps([message, "", contract.QUEUE])
        r.hset(channel.unacked_key, "tag-1", record)
        channel.qos._delivered["tag-1"] = None
        # When kombu has closed the connection under the channel (pools gone, client None)
        channel._pool = None
        conn.transport.client = None
        # Then restoring gives up quietly, and the record stays for the visibility timeout
        channel.qos.restore_by_tag("tag-1")
        channel.qos.restore_unacked()
        assert r.hget(channel.unacked_key, "tag-1") == record.encode()
        assert r.llen(contract.QUEUE) == 0
    finally:
        conn.transport.client = conn
        conn.release()
