"""The producer's own RESP packing writes exactly the bytes redis-py's ``pack_command`` does."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from producer.connections import packed


def redis_py(*args: object) -> bytes:
    return b"".join(redis.Connection().pack_command(*args))


def test_the_commands_the_producer_sends() -> None:
    message = '{"body": "eyJ4Ijog4oK5fQ==", "headers": {"argsrepr": "<1 event(s)>"}, "é": "%"}'
    for args in (
        ("LPUSH", "celery", message),
        ("LPUSH", "celery", message, message + "x" * 7000),  # (redis-py sends big ones apart)
        ("EVAL", "return 1", 2, "limechat:once:acct:key", "celery", "id-1", 86400, message),
        ("PING",),
    ):
        assert packed(args) == redis_py(*args)


@given(
    st.sampled_from(["LPUSH", "EVAL", "PING"]),
    st.lists(st.one_of(st.text(), st.binary(), st.integers(), st.floats()), max_size=6),
)
def test_any_text_bytes_or_numbers(command: str, args: list[object]) -> None:
    # (the first argument is a command name: redis-py splits it at spaces, as for "CONFIG GET")
    assert packed((command, *args)) == redis_py(command, *args)


@pytest.mark.parametrize("arg", [None, True, bytearray(b"x"), memoryview(b"x")])
def test_anything_else_is_refused_not_sent_as_its_repr(arg: object) -> None:
    with pytest.raises(TypeError, match="cannot be a"):
        packed(("LPUSH", "q", arg))  # type: ignore[arg-type]
