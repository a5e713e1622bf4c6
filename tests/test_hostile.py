"""Hostile and broken inputs through the real gunicorn and, for what faces clients, nginx.

Each bad request must get a JSON 4xx with its error code; odd but valid images must be
classified, and the same as their plain equivalents. Clients that vanish or crawl must not
hold on to workers.
"""

import contextlib
import io
import socket
import threading
import time

import pytest
import requests
from PIL import Image

from scripts.hostile_inputs import REFUSED, accepted, encode
from tests.conftest import metric_samples, start_nginx, stop


@pytest.fixture(scope="module")
def nginx(live_server, tmp_path_factory):
    proc, url = start_nginx(tmp_path_factory.mktemp("nginx"), [live_server.removeprefix("http://")])
    yield url
    stop(proc)


@pytest.fixture
def base(request, live_server, nginx):
    return {"gunicorn": live_server, "nginx": nginx}[request.param]


CASES = [pytest.param(case, via, id=f"{case.name}-via-{via}") for case in REFUSED for via in case.via]


@pytest.mark.parametrize(("case", "base"), CASES, indirect=["base"])
def test_bad_requests_get_json_4xx(case, base):
    kwargs = {"timeout": 60, **case.request}
    try:
        r = requests.request(case.method, base + case.path, **kwargs)
    except requests.ConnectionError:
        pytest.fail("the server dropped the connection instead of answering")
    assert r.headers["Content-Type"].startswith("application/json"), r.text[:200]
    body = r.json()
    assert (r.status_code, body["error"]) == (case.status, case.code), body
    assert case.message in body["message"] and body["status"] == 0
    assert body["request_id"] == r.headers["X-Request-ID"]
    assert "Traceback" not in r.text and 'File "' not in r.text


ODD = accepted()


def predictions(base: str, data: bytes) -> list[dict]:
    r = requests.post(base + "/model_predict", files={"image": ("img", data)}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


@pytest.mark.parametrize("odd", ODD, ids=[o.name for o in ODD])
def test_odd_but_valid_images_are_classified(odd, nginx):
    got = predictions(nginx, odd.data)
    assert len(got) == 5
    if odd.same_as is not None:
        want = predictions(nginx, odd.same_as)
        assert [p["index"] for p in got] == [p["index"] for p in want]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(got, want, strict=True)) < 1e-4


def test_the_exif_case_would_catch_an_ignored_rotation(nginx):
    """Sent without its EXIF flag, the sideways picture gets another answer: the check can fail."""
    rotated = next(o for o in ODD if o.name == "exif-rotated")
    flag_dropped = encode(Image.open(io.BytesIO(rotated.data)).convert("RGB"), "PNG")
    a, b = predictions(nginx, flag_dropped), predictions(nginx, rotated.same_as)
    assert [p["score"] for p in a] != pytest.approx([p["score"] for p in b], abs=1e-4)


# --- clients that vanish or crawl ------------------------------------------------------------


def in_flight(base: str) -> float:
    return metric_samples(requests.get(base + "/metrics", timeout=10).text)["classifier_in_flight_requests"]


def raw_request(base: str, body: bytes, declared: int | None = None) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST /model_predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {declared if declared is not None else len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_clients_that_vanish_mid_upload_or_mid_inference_leave_nothing_stuck(live_server, jpeg_bytes):
    for _ in range(20):  # mid-upload: a third of the declared body, then gone
        raw_request(live_server, jpeg_bytes[: len(jpeg_bytes) // 3], declared=len(jpeg_bytes)).close()
    for _ in range(20):  # mid-inference: the whole request, then gone before the answer
        raw_request(live_server, jpeg_bytes).close()
    deadline = time.monotonic() + 30
    while in_flight(live_server) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert in_flight(live_server) == 0
    started = time.monotonic()
    assert len(predictions(live_server, jpeg_bytes)) == 5
    assert time.monotonic() - started < 5  # not queued behind abandoned work


def test_slow_clients_do_not_starve_normal_ones(nginx, jpeg_bytes):
    """50 slowloris connections drip bytes into nginx; normal clients are still served."""
    stop_dripping, socks = threading.Event(), []
    for i in range(50):
        if i % 2:  # half drip their headers, half their body
            host, port = nginx.removeprefix("http://").split(":")
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"POST /model_predict HTTP/1.1\r\nHost: x\r\n")
        else:
            sock = raw_request(nginx, jpeg_bytes[:100], declared=len(jpeg_bytes))
        socks.append(sock)

    def drip():
        while not stop_dripping.wait(0.5):
            for i, sock in enumerate(socks):
                with contextlib.suppress(OSError):  # nginx may time a dripper out; that is fine
                    sock.sendall(b"X-a: b\r\n" if i % 2 else b"\xff")

    dripper = threading.Thread(target=drip)
    dripper.start()
    try:
        times = []
        for _ in range(10):
            started = time.monotonic()
            assert len(predictions(nginx, jpeg_bytes)) == 5
            times.append(time.monotonic() - started)
        assert max(times) < 5, times
    finally:
        stop_dripping.set()
        dripper.join()
        for sock in socks:
            sock.close()
