"""The sandbox over a real socket: a bounded request log, and bad Content-Length headers."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from worker.sandbox import PATH, Sandbox

pytestmark = pytest.mark.integration

TOKEN, ACCOUNT = "sandbox-token", "sandbox-account"
HEADERS = {
    "Content-Type": "application/json",
    "x-limechat-uat": TOKEN,
    "x-fb-account-id": ACCOUNT,
}


@pytest.fixture
def small() -> Iterator[Sandbox]:
    """A sandbox that keeps only the newest five requests."""
    sandbox = Sandbox(token=TOKEN, account=ACCOUNT, log_size=5).start()
    yield sandbox
    sandbox.stop()


def address(sandbox: Sandbox) -> tuple[str, int]:
    parts = urlsplit(sandbox.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def body(i: int) -> bytes:
    return json.dumps(
        {"distinct_id": str(i), "phone": "+915673412780", "event": "e", "data": {"i": i}}
    ).encode()


def raw_exchange(sandbox: Sandbox, head: str, timeout: float = 10) -> bytes:
    """Send ``head`` (a request line and headers, no body) and read until the sandbox closes
    the connection; our side stays open, as a client waiting for its answer does."""
    with socket.create_connection(address(sandbox), timeout=timeout) as conn:
        conn.sendall(head.encode("latin-1"))
        received = b""
        while chunk := conn.recv(65536):  # (socket.timeout if no answer comes)
            received += chunk
        return received


def test_the_log_keeps_the_newest_requests_and_counts_them_all(small: Sandbox) -> None:
    # Given a sandbox keeping five requests, and one keep-alive connection to it
    conn = http.client.HTTPConnection(*address(small), timeout=10)
    try:
        # When it answers twelve: eight good ones and four with a wrong Content-Type
        for i in range(12):
            headers = dict(HEADERS)
            if i % 3 == 0:
                headers["Content-Type"] = "text/plain"
            conn.request("POST", PATH, body=body(i), headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == (400 if i % 3 == 0 else 200)
    finally:
        conn.close()
    # Then it keeps the newest five, counts all twelve, and accepted() reads what it kept
    assert [(req.headers["x-limechat-uat"], status) for req, status in small.requests] == [
        (TOKEN, 200 if i % 3 else 400) for i in range(7, 12)
    ]
    assert [req.body["data"]["i"] for req in small.accepted()] == [7, 8, 10, 11]
    assert small.received == 12
    assert small.by_status == {200: 8, 400: 4}


@pytest.mark.parametrize("length", ["-5", "abc", "+12", "1e3", ""])
def test_a_content_length_that_is_not_a_byte_count_is_answered_400_naming_it(
    small: Sandbox, length: str
) -> None:
    # When a request says its body has a negative, signed or non-numeric length
    answer = raw_exchange(
        small, f"POST {PATH} HTTP/1.1\r\nHost: sandbox\r\nContent-Length: {length}\r\n\r\n"
    )
    # Then it is answered at once (not after the client gives up), and the connection closed
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 400 Bad Request", answer
    assert b"\r\nConnection: close" in head
    error = json.loads(payload)["error"]
    assert error == f"Content-Length {length!r} is not a whole number of bytes"
    assert small.by_status == {400: 1}


def test_a_length_of_more_digits_than_int_takes_is_answered_413(small: Sandbox) -> None:
    length = "9" * 5000
    answer = raw_exchange(
        small, f"POST {PATH} HTTP/1.1\r\nHost: sandbox\r\nContent-Length: {length}\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert small.by_status == {413: 1}


def test_a_good_request_after_a_refused_length_on_a_new_connection_is_served(
    small: Sandbox,
) -> None:
    raw_exchange(small, f"POST {PATH} HTTP/1.1\r\nHost: sandbox\r\nContent-Length: -1\r\n\r\n")
    conn = http.client.HTTPConnection(*address(small), timeout=10)
    try:
        conn.request("POST", PATH, body=body(1), headers=HEADERS)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert [req.body["data"]["i"] for req in small.accepted()] == [1]
