"""TorchServe's inference API as a drop-in, on the real stack (gunicorn behind the repo's nginx).

A TorchServe user changes host and port and nothing else: the curl lines of TorchServe's docs
(run with the real curl), a client written as its docs show, the image classifier's answer
equal to /model_predict's, /ping, the management reads, a multilabel model behind API_KEY,
and a table of hostile and wrong requests, each refused with a 4xx in TorchServe's shape
(`{"code", "type", "message"}` and X-Request-ID), from the app and from nginx alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from app.core.errors import Kind, ServiceError
from app.core.guard import SAFE_ID
from scripts.hostile_inputs import JPEG, jpeg_claiming, jpeg_with_empty_scans, png_bomb
from scripts.procs import render_nginx_conf, stack
from tests.conftest import VOC_LABELS, free_port, spawn, stop

KEY = "torchserve-key-" + "k" * 20
PREDICT = "/predictions/classifier"


@pytest.fixture(scope="module")
def plain(imagenet_ckpt, tmp_path_factory):
    """Multiclass ResNet-18, no key: the stack a TorchServe user points a client at."""
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(imagenet_ckpt), "WORKERS": "1"}
    with stack(env, tmp_path_factory.mktemp("ts-plain")) as s:
        yield s


@pytest.fixture(scope="module")
def guarded(voc_ckpt, tmp_path_factory):
    """Multilabel VOC (Cat and Person fire) with API_KEY set."""
    env = {
        "MODEL_ARCH": "resnet18",
        "MODEL_WEIGHTS": str(voc_ckpt),
        "MODEL_LABELS": VOC_LABELS,
        "MODEL_TASK": "multilabel",
        "API_KEY": KEY,
        "WORKERS": "1",
    }
    with stack(env, tmp_path_factory.mktemp("ts-guarded")) as s:
        yield s


@pytest.fixture(scope="module")
def kitten(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "kitten.jpg"
    path.write_bytes(JPEG)
    return path


def seed_answer(url: str, headers: dict | None = None) -> dict[str, float]:
    """/model_predict's answer for the same image, as label -> score, best first."""
    r = requests.post(url + "/model_predict", files={"image": ("k.jpg", JPEG)}, headers=headers or {}, timeout=60)
    assert r.status_code == 200, r.text
    return {p["label"]: p["score"] for p in r.json()["predictions"]}


def version(url: str) -> str:
    return requests.get(url + "/ready", timeout=10).json()["model"]["version"]


def same_answer(got: dict, want: dict) -> None:
    assert list(got) == list(want), (got, want)  # the same labels, best first
    assert list(got.values()) == pytest.approx(list(want.values()), abs=1e-6)


def refused(r: requests.Response, status: int, kind: str) -> None:
    """A 4xx (never a 5xx, never HTML) in TorchServe's shape, with a safe request id."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"] == "application/json", r.text[:200]
    body = r.json()
    assert set(body) == {"code", "type", "message"} and body["code"] == status, body
    assert body["type"] == kind and body["message"], body
    assert SAFE_ID.fullmatch(r.headers["X-Request-ID"]) and "Traceback" not in r.text


# --- TorchServe's docs, as written -----------------------------------------------------------


def curl(*args: str) -> tuple[int, dict, object]:
    """The real curl binary: (status, last response's headers, JSON body)."""
    with tempfile.TemporaryDirectory() as tmp:
        body, head = Path(tmp) / "body", Path(tmp) / "head"
        out = subprocess.run(
            ["curl", "-sS", "-o", str(body), "-D", str(head), "-w", "%{http_code}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        last = head.read_bytes().decode().strip().split("\r\n\r\n")[-1]  # after any "100 Continue"
        headers = dict(line.split(": ", 1) for line in last.splitlines()[1:])
        return int(out.stdout), headers, json.loads(body.read_bytes())


CURL_LINES = {  # TorchServe's inference API docs, host and port changed; {v}: the model's version
    "put-T": ["{url}/predictions/classifier", "-T", "{kitten}"],
    "post-T": ["-X", "POST", "{url}/predictions/classifier", "-T", "{kitten}"],
    "form-data": ["{url}/predictions/classifier", "-F", "data=@{kitten}"],
    "form-body": ["{url}/predictions/classifier", "-F", "body=@{kitten}"],
    "versioned-put-T": ["{url}/predictions/classifier/{v}", "-T", "{kitten}"],
    "versioned-form-data": ["{url}/predictions/classifier/{v}", "-F", "data=@{kitten}"],
}


@pytest.mark.parametrize("line", CURL_LINES)
def test_the_documented_curl_lines_answer_as_model_predict(plain, kitten, line):
    args = [a.format(url=plain.url, kitten=kitten, v=version(plain.url)) for a in CURL_LINES[line]]
    status, headers, body = curl(*args)
    assert status == 200 and SAFE_ID.fullmatch(headers["X-Request-ID"]), body
    same_answer(body, seed_answer(plain.url))
    assert len(body) == 5  # TOP_K


@pytest.mark.parametrize("method", [requests.post, requests.put])
def test_a_client_written_as_torchserves_docs_show(plain, kitten, method):
    with open(kitten, "rb") as f:
        r = method(plain.url + PREDICT, data=f, timeout=60)
    assert r.status_code == 200, r.text
    same_answer(r.json(), seed_answer(plain.url))


def test_ping_models_and_describe(plain):
    status, _, body = curl(plain.url + "/ping")
    assert (status, body) == (200, {"status": "Healthy"})
    ready = requests.get(plain.url + "/ready", timeout=10).json()["model"]
    listed = requests.get(plain.url + "/models", timeout=10).json()
    assert listed == {"models": [{"modelName": "classifier", "modelUrl": ready["weights"]}]}
    for suffix in ("", "/" + ready["version"], "/all"):
        (model,) = requests.get(plain.url + "/models/classifier" + suffix, timeout=10).json()
        assert (model["modelName"], model["modelVersion"], model["runtime"]) == (
            "classifier",
            ready["version"],
            "python",
        )
        assert (model["minWorkers"], model["maxWorkers"], model["batchSize"], model["maxBatchDelay"]) == (1, 1, 4, 0)
        assert model["loadedAtStartup"] is True and model["customizedMetadata"] == ready
        (worker,) = model["workers"]
        # The gunicorn worker that holds the model, not the master: its parent is the master.
        ppid = next(line for line in Path(f"/proc/{worker['pid']}/status").read_text().splitlines() if "PPid" in line)
        assert int(ppid.split()[1]) == plain.gunicorn.pid
        assert worker["status"] == "READY" and worker["memoryUsage"] > 50 << 20 and worker["gpu"] is False


def test_models_pages_as_torchserve(plain):
    assert requests.get(plain.url + "/models?limit=1&next_page_token=1", timeout=10).json() == {"models": []}
    assert len(requests.get(plain.url + "/models?limit=0", timeout=10).json()["models"]) == 1


def test_the_door_is_counted_and_logged_by_the_gate(plain):
    requests.put(plain.url + PREDICT, data=JPEG, timeout=60)
    text = requests.get(plain.url + "/metrics", timeout=10).text
    assert 'endpoint="/predictions/<model>",status="200"' in text
    assert '"path": "/predictions/classifier"' in plain.log.read_text().replace('":"', '": "')


# --- a multilabel model, behind the key -------------------------------------------------------


def test_multilabel_answers_the_labels_above_the_threshold(guarded):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = requests.put(guarded.url + PREDICT, data=JPEG, headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["Cat", "Person"]
    same_answer(r.json(), seed_answer(guarded.url, auth))


KEYS = {"none": {}, "wrong": {"Authorization": "Bearer " + "w" * 35}, "x-api-key-wrong": {"X-API-Key": "nope"}}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("path", [PREDICT, "/models/classifier"])
def test_predictions_and_descriptions_need_the_key(guarded, key, path):
    call = requests.put if path == PREDICT else requests.get
    r = call(guarded.url + path, data=b"\xff not read: the key comes first", headers=KEYS[key], timeout=30)
    refused(r, 401, "InvalidKeyException")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_with_the_key_as_x_api_key_and_probes_open(guarded):
    assert requests.put(guarded.url + PREDICT, data=JPEG, headers={"X-API-Key": KEY}, timeout=60).status_code == 200
    assert requests.get(guarded.url + "/ping", timeout=10).json() == {"status": "Healthy"}
    assert requests.get(guarded.url + "/models", timeout=10).status_code == 200


# --- hostile and wrong requests, through nginx -------------------------------------------------


def form(*parts: tuple[str, bytes | None]) -> dict:
    return {"files": [(name, ("k.jpg", data) if data is not None else (None, "text")) for name, data in parts]}


BAD = "BadRequestException"
HOSTILE = {  # name: (method, path, requests kwargs, status, TorchServe type)
    "empty-body": ("PUT", PREDICT, {"data": b""}, 400, BAD),
    "not-an-image": ("PUT", PREDICT, {"data": b"just some text\n" * 40}, 400, BAD),
    "truncated-jpeg": ("POST", PREDICT, {"data": JPEG[: len(JPEG) // 3]}, 400, BAD),
    "deep-json-body": (
        "POST",
        PREDICT,
        {"data": b"[" * 10_000, "headers": {"Content-Type": "application/json"}},
        400,
        BAD,
    ),
    "base64-json-body": ("POST", PREDICT, {"json": {"data": "aGVsbG8="}}, 400, BAD),
    "png-bomb": ("PUT", PREDICT, {"data": png_bomb()}, 413, "RequestEntityTooLargeException"),
    "jpeg-claiming-65000x65000": (
        "PUT",
        PREDICT,
        {"data": jpeg_claiming(65000, 65000)},
        413,
        "RequestEntityTooLargeException",
    ),
    "jpeg-with-5000-scans": (
        "PUT",
        PREDICT,
        {"data": jpeg_with_empty_scans(5000)},
        413,
        "RequestEntityTooLargeException",
    ),
    "form-wrong-field": ("POST", PREDICT, form(("image", JPEG)), 400, BAD),
    "form-two-files": ("POST", PREDICT, form(("data", JPEG), ("data", JPEG)), 400, BAD),
    "form-data-and-body": ("POST", PREDICT, form(("data", JPEG), ("body", JPEG)), 400, BAD),
    "form-text-field": ("POST", PREDICT, form(("data", None)), 400, BAD),
    "form-empty-file": ("POST", PREDICT, form(("data", b"")), 400, BAD),
    "form-5000-byte-field-name": ("POST", PREDICT, form(("f" * 5000, JPEG)), 400, BAD),
    "form-no-boundary": (
        "POST",
        PREDICT,
        {"data": b"--X\r\n\r\n", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        BAD,
    ),
    "wrong-model": ("PUT", "/predictions/resnet-18", {"data": JPEG}, 404, "ModelNotFoundException"),
    "wrong-version": ("PUT", PREDICT + "/2.0", {"data": JPEG}, 404, "ModelVersionNotFoundException"),
    "oip-server-revision-as-version": ("PUT", PREDICT + "/1", {"data": JPEG}, 404, "ModelVersionNotFoundException"),
    "nul-as-model": ("PUT", "/predictions/%00", {"data": JPEG}, 400, BAD),  # nginx refuses a decoded NUL
    "quote-as-model": ("PUT", "/predictions/a%22b%5C", {"data": JPEG}, 404, "ModelNotFoundException"),
    "4000-byte-model": ("PUT", "/predictions/" + "m" * 4000, {"data": JPEG}, 404, "ModelNotFoundException"),
    "dot-dot-encoded": ("PUT", PREDICT + "/..%2F..%2Fetc%2Fpasswd", {"data": JPEG}, 404, "ResourceNotFoundException"),
    "too-deep": ("PUT", PREDICT + "/1/2", {"data": JPEG}, 404, "ResourceNotFoundException"),
    "no-model": ("POST", "/predictions", {"data": JPEG}, 404, "ResourceNotFoundException"),
    "get-predictions": ("GET", PREDICT, {}, 405, "MethodNotAllowedException"),
    "delete-predictions": ("DELETE", PREDICT, {}, 405, "MethodNotAllowedException"),
    "register-a-model": ("POST", "/models?url=resnet-18.mar", {}, 405, "MethodNotAllowedException"),
    "scale-workers": ("PUT", "/models/classifier?min_worker=3", {}, 405, "MethodNotAllowedException"),
    "unregister": ("DELETE", "/models/classifier/1.0", {}, 405, "MethodNotAllowedException"),
    "set-default": ("PUT", "/models/classifier/1.0/set-default", {}, 404, "ResourceNotFoundException"),
    "describe-unknown-model": ("GET", "/models/resnet-18", {}, 404, "ModelNotFoundException"),
    "describe-unknown-version": ("GET", "/models/classifier/9.9", {}, 404, "ModelVersionNotFoundException"),
    "list-limit-not-a-number": ("GET", "/models?limit=ten", {}, 400, BAD),
    "list-token-negative": ("GET", "/models?next_page_token=-1", {}, 400, BAD),
    "list-limit-superscript": ("GET", "/models?limit=%C2%B2", {}, 400, BAD),
    "post-ping": ("POST", "/ping", {}, 405, "MethodNotAllowedException"),
    "ping-subpath": ("GET", "/ping/x", {}, 404, "ResourceNotFoundException"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_and_wrong_requests_are_refused_in_torchserves_shape(plain, name):
    method, path, kwargs, status, kind = HOSTILE[name]
    r = requests.request(method, plain.url + path, timeout=60, **kwargs)
    refused(r, status, kind)


def test_an_unsafe_request_id_is_replaced(plain):
    for method, path in (("PUT", PREDICT), ("GET", "/nope-not-ours"), ("GET", PREDICT)):
        r = requests.request(method, plain.url + path, data=b"x", headers={"X-Request-ID": 'a"b\\c'}, timeout=30)
        assert r.headers["X-Request-ID"] != 'a"b\\c' and SAFE_ID.fullmatch(r.headers["X-Request-ID"])
    kept = requests.put(plain.url + PREDICT, data=JPEG, headers={"X-Request-ID": "client-7.a:b_c"}, timeout=60)
    assert kept.headers["X-Request-ID"] == "client-7.a:b_c"


def test_a_body_over_the_limit_sent_by_curl_is_nginxs_413_in_torchserves_shape(plain, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (21 << 20))
    status, headers, body = curl(plain.url + PREDICT, "-T", str(big))  # curl sends Expect: 100-continue
    assert (
        status == 413 and body["type"] == "RequestEntityTooLargeException" and set(body) == {"code", "type", "message"}
    )
    assert SAFE_ID.fullmatch(headers["X-Request-ID"])


# --- what nginx itself refuses on this door's paths ------------------------------------------


def raw(url: str, data: bytes) -> tuple[int, dict, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), dict(line.split(": ", 1) for line in lines[1:] if ": " in line), body


def line(first: bytes, *headers: bytes) -> bytes:
    return first + b"\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n"


EDGE = {
    "path-above-the-root": (line(b"PUT /predictions/../../etc/passwd HTTP/1.1"), 400, BAD),
    "two-content-lengths": (
        line(b"PUT /predictions/classifier HTTP/1.1", b"Content-Length: 1", b"Content-Length: 2"),
        400,
        BAD,
    ),
    "trace": (line(b"TRACE /predictions/classifier HTTP/1.1"), 405, "MethodNotAllowedException"),
    "body-over-20MiB": (
        line(b"PUT /predictions/classifier HTTP/1.1", b"Content-Length: 30000000"),
        413,
        "RequestEntityTooLargeException",
    ),
    "header-over-8KiB": (line(b"GET /ping HTTP/1.1", b"X-Pad: " + b"a" * 9000), 431, BAD),
    "chunked-identity": (line(b"POST /models HTTP/1.1", b"Transfer-Encoding: chunked, identity"), 501, BAD),
}


@pytest.mark.parametrize("name", EDGE)
def test_nginx_answers_this_doors_paths_in_its_shape(plain, name):
    data, status, kind = EDGE[name]
    got, headers, body = raw(plain.url, data)
    assert (got, headers["Content-Type"]) == (status, "application/json"), body[:200]
    assert json.loads(body) == {"code": status, "type": kind, "message": json.loads(body)["message"]}
    assert SAFE_ID.fullmatch(headers["X-Request-ID"])


def test_other_paths_keep_the_seeds_shape_from_nginx(plain):
    _, _, body = raw(plain.url, line(b"PUT /model_predict HTTP/1.1", b"Content-Length: 30000000"))
    assert json.loads(body)["error"] == "request_entity_too_large"
    _, _, body = raw(plain.url, line(b"PUT /predictionsx HTTP/1.1", b"Content-Length: 30000000"))
    assert json.loads(body)["status"] == 0


@pytest.fixture(scope="module")
def dead_edge(tmp_path_factory):
    """The repo's nginx in front of a port nobody listens on: every proxied request is its 502."""
    prefix, port = tmp_path_factory.mktemp("ts-dead"), free_port()
    (prefix / "logs").mkdir()
    conf = render_nginx_conf(port, [f"127.0.0.1:{free_port()}"]).replace("_temp_path tmp/", f"_temp_path {prefix}/")
    (prefix / "nginx.conf").write_text(conf)
    cmd = ["nginx", "-e", "stderr", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    proc = spawn(cmd, {}, prefix / "nginx.out")
    try:
        for _ in range(200):  # listening within 20 s (no /health to wait for: it is a 502 too)
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_a_dead_backend_is_nginxs_502_in_each_doors_shape(dead_edge):
    refused(requests.put(dead_edge + PREDICT, data=JPEG, timeout=30), 502, "ServiceUnavailableException")
    refused(requests.get(dead_edge + "/ping", timeout=30), 502, "ServiceUnavailableException")
    seed = requests.get(dead_edge + "/health", timeout=30)
    assert seed.status_code == 502 and seed.json()["error"] == "bad_gateway"


# --- the one error table, every kind, in-process -----------------------------------------------

EXPECTED = {  # kind: (status, TorchServe type, headers it must carry)
    Kind.INVALID: (400, BAD, {}),
    Kind.UNSUPPORTED: (400, BAD, {}),
    Kind.TOO_LARGE: (413, "RequestEntityTooLargeException", {}),
    Kind.UNAUTHENTICATED: (401, "InvalidKeyException", {"WWW-Authenticate": 'Bearer realm="classifier"'}),
    Kind.NOT_FOUND: (404, "ModelNotFoundException", {}),
    Kind.OVERLOADED: (503, "ServiceUnavailableException", {"Retry-After": "1"}),
    Kind.DEADLINE: (504, "RequestTimeoutException", {}),
    Kind.NOT_READY: (503, "ServiceUnavailableException", {"Retry-After": "1"}),
    Kind.INTERNAL: (500, "InternalServerException", {}),
}


def test_every_kind_has_a_row():
    assert set(EXPECTED) == set(Kind)


@pytest.mark.parametrize("kind", list(Kind))
def test_each_kind_maps_to_torchserves_status_and_type(client, app, monkeypatch, kind):
    error = type("Refusal", (ServiceError,), {"kind": kind})(
        "some_code", "what to do", 1 if "Retry-After" in EXPECTED[kind][2] else None
    )

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(app.extensions["classifier"], "classify", refuse)
    r = client.put(PREDICT, data=JPEG)
    status, kind_name, headers = EXPECTED[kind]
    assert (r.status_code, r.json) == (status, {"code": status, "type": kind_name, "message": "what to do"})
    assert {name: r.headers.get(name) for name in headers} == headers


def test_an_unexpected_error_is_a_generic_500_logged_with_its_id(client, app, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.extensions["classifier"], "classify", broken)
    with caplog.at_level(logging.ERROR, logger="app.torchserve.http"):
        r = client.put(PREDICT, data=JPEG)
    rid = r.headers["X-Request-ID"]
    assert r.status_code == 500 and r.json == {
        "code": 500,
        "type": "InternalServerException",
        "message": f"internal server error; request id {rid}",
    }
    assert "secret internals" in caplog.text and rid in caplog.text


def test_not_ready_is_unhealthy_and_refuses_predictions(client, app, monkeypatch):
    monkeypatch.setattr(app.extensions["classifier"], "batcher", None)  # as before start()
    r = client.get("/ping")
    assert (r.status_code, r.json) == (500, {"status": "Unhealthy"})  # TorchServe's unhealthy answer
    r = client.put(PREDICT, data=JPEG)
    assert (r.status_code, r.json["type"], r.headers["Retry-After"]) == (503, "ServiceUnavailableException", "5")


def test_one_process_describes_itself(client):
    (model,) = client.get("/models/classifier").json
    (worker,) = model["workers"]
    assert worker["pid"] == int(worker["id"]) == os.getpid() and worker["memoryUsage"] > 0
