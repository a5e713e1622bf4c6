"""OneWriteResponse: a response's headers and body leave in one send, so a worker killed
mid-response can't hand nginx headers without their body (tests/test_multihost.py kills one)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from app.runtime.workers import OneWriteResponse


class Socket:
    def __init__(self):
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(data)


def respond(body_parts: list[bytes], headers: list[tuple[str, str]], response_class=OneWriteResponse) -> list[bytes]:
    req = SimpleNamespace(version=(1, 1), method="POST", headers=[], should_close=lambda: False)
    sock = Socket()
    response = response_class(req, sock, Config())
    response.start_response("200 OK", headers)
    for part in body_parts:
        response.write(part)
    response.close()
    return sock.sends


def test_headers_and_a_sized_body_leave_in_one_send():
    sends = respond([b'{"ok":1}'], [("Content-Type", "application/json"), ("Content-Length", "8")])
    assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 200 OK") and sends[0].endswith(b'\r\n\r\n{"ok":1}')


@pytest.mark.parametrize(
    "parts, headers, body",
    [
        ([], [("Content-Length", "0")], b""),  # no body: the headers still go, at close
        ([b""], [("Content-Length", "0")], b""),
        ([b"ab", b"cd"], [("Content-Length", "4")], b"abcd"),  # later parts follow as usual
        ([b"abcdef"], [("Content-Length", "3")], b"abc"),  # never more than Content-Length
        ([b"ab", b"cd"], [], b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),  # chunked
    ],
)
def test_every_response_shape_is_complete(parts, headers, body):
    sent = b"".join(respond(parts, headers))
    head, _, rest = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and rest == body


def test_the_stock_response_still_writes_twice():
    """Why OneWriteResponse is kept: if gunicorn ever sends one write itself, this fails, and the
    subclass (app/runtime/workers.py) can go."""
    sends = respond([b'{"ok":1}'], [("Content-Length", "8")], response_class=wsgi.Response)
    assert len(sends) == 2 and sends[1] == b'{"ok":1}'


def test_a_head_request_sends_its_headers_once():
    req = SimpleNamespace(version=(1, 1), method="HEAD", headers=[], should_close=lambda: False)
    sock = Socket()
    response = OneWriteResponse(req, sock, Config())
    response.start_response("200 OK", [("Content-Length", "8")])
    response.write(b'{"ok":1}')  # dropped: HEAD has no body
    response.close()
    assert len(sock.sends) == 1 and sock.sends[0].endswith(b"\r\n\r\n")
