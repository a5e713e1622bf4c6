"""nginx at the edge: JSON for every error it makes, a request id safe to embed, and limits
no looser than gunicorn's, sent as raw bytes on a socket, the way scanners send them."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import requests

from app.config import ROOT
from app.core.guard import SAFE_ID
from tests.conftest import start_nginx, stop


@pytest.fixture(scope="module")
def edge(live_server, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("edge")
    proc, url = start_nginx(prefix, [live_server.removeprefix("http://")])
    yield {"url": url, "port": int(url.rsplit(":", 1)[1]), "access_log": prefix / "logs" / "access.log"}
    stop(proc)


def raw(port: int, data: bytes) -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)  # each request says Connection: close; a half-close would be an abort to nginx
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def request(line: bytes, *headers: bytes) -> bytes:
    return line + b"\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n"


BAD_LINES = {
    "path-above-the-root": (request(b"GET /../../etc/passwd HTTP/1.1"), 400),
    "lowercase-method": (request(b"get / HTTP/1.1"), 400),
    "space-in-uri": (request(b"GET /a b HTTP/1.1"), 400),
    "nul-in-uri": (request(b"GET /a\x00b HTTP/1.1"), 400),
    "bad-version": (request(b"GET / HTTP/1.1x"), 400),
    "http-2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    "tls-client-hello": (bytes.fromhex("16030100a5010000a10303") + b"\0" * 64 + b"\r\n\r\n", 400),
    "garbage": (b"\x00\x01\x02\x03\r\n\r\n", 400),
    "trace": (request(b"TRACE / HTTP/1.1"), 405),
    "uri-over-8KiB": (request(b"GET /" + b"a" * 9000 + b" HTTP/1.1"), 414),
    "header-over-8KiB": (request(b"GET /health HTTP/1.1", b"X-Pad: " + b"a" * 9000), 431),
    "headers-over-32KiB": (request(b"GET /health HTTP/1.1", *[b"X-P%d: " % i + b"a" * 7000 for i in range(6)]), 431),
    "internal-error-page": (request(b"GET /_edge/502 HTTP/1.1"), 404),
    "body-over-20MiB": (request(b"POST /model_predict HTTP/1.1", b"Content-Length: 30000000"), 413),
    "two-content-lengths": (request(b"POST /model_predict HTTP/1.1", b"Content-Length: 1", b"Content-Length: 2"), 400),
    "chunked-identity": (request(b"POST /model_predict HTTP/1.1", b"Transfer-Encoding: chunked, identity"), 501),
    "http-2.0-request-line": (request(b"GET / HTTP/2.0"), 505),
}


@pytest.mark.parametrize("name", BAD_LINES)
def test_nginx_answers_json_to_what_it_refuses(edge, name):
    data, status = BAD_LINES[name]
    got, headers, body = raw(edge["port"], data)
    assert got == status, body[:200]
    assert headers["Content-Type"] == "application/json", body[:200]
    answer = json.loads(body)
    assert answer["status"] == 0 and answer["request_id"] == headers["X-Request-ID"]
    assert SAFE_ID.fullmatch(answer["request_id"])


# What nginx lets through, gunicorn must accept: it must never answer its own HTML behind nginx.
ALLOWED = {
    "uri-of-8100-bytes": request(b"GET /health?" + b"a" * 8100 + b" HTTP/1.1"),
    "500-headers": request(b"GET /health HTTP/1.1", *[b"X-H%d: v" % i for i in range(500)]),
    "header-of-8100-bytes": request(b"GET /health HTTP/1.1", b"X-Pad: " + b"a" * 8100),
    "x-forwarded-for-of-8100-bytes": request(b"GET /health HTTP/1.1", b"X-Forwarded-For: " + b"1" * 8100),
}


@pytest.mark.parametrize("path", ["/v2//models/classifier/infer", "/v2/models/classifier/versions//infer"])
def test_double_slashes_under_v2_are_oip_404s_not_redirects(edge, path):
    r = requests.post(edge["url"] + path, data=b"{}", allow_redirects=False, timeout=10)
    assert r.status_code == 404 and set(r.json()) == {"error"}, r.text[:200]


@pytest.mark.parametrize("name", ALLOWED)
def test_what_nginx_passes_gunicorn_accepts(edge, name):
    status, headers, body = raw(edge["port"], ALLOWED[name])
    assert (status, headers["Content-Type"]) == (200, "application/json"), body[:300]


UNSAFE_IDS = ['a"b', "a\\b", "a b", "x" * 129, "", "a\tb", "é", "a;b"]


@pytest.mark.parametrize("given", UNSAFE_IDS, ids=range(len(UNSAFE_IDS)))
def test_unsafe_request_ids_are_replaced_at_the_edge(edge, given):
    header = b"X-Request-ID: " + given.encode()
    for line in (b"GET /nope-%d HTTP/1.1", b"GET /_edge/400?%d HTTP/1.1"):  # the app's 404, nginx's 404
        _, headers, body = raw(edge["port"], request(line % len(given), header))
        rid = json.loads(body)["request_id"]
        assert rid != given and SAFE_ID.fullmatch(rid) and headers["X-Request-ID"] == rid


def test_edge_and_app_log_the_same_id(edge):
    """A safe id passes through; an unsafe one is replaced once, at the edge, and the app keeps
    nginx's replacement, so both logs name the same request."""
    r = requests.get(edge["url"] + "/health", headers={"X-Request-ID": 'bad"id'}, timeout=10)
    rid = r.headers["X-Request-ID"]
    assert SAFE_ID.fullmatch(rid)
    deadline = time.monotonic() + 5  # the access log is flushed every second
    while f"rid={rid}" not in edge["access_log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"rid={rid}" in edge["access_log"].read_text()
    kept = requests.get(edge["url"] + "/health", headers={"X-Request-ID": "abc-123.x:y_z"}, timeout=10)
    assert kept.headers["X-Request-ID"] == "abc-123.x:y_z"


def test_nginx_and_the_app_share_one_id_rule():
    conf = (ROOT / "nginx.conf").read_text()
    (pattern,) = re.findall(r'"~\^(.+)\$" \$http_x_request_id', conf)
    assert pattern == SAFE_ID.pattern
