"""The Open Inference Protocol's HTTP codec in-process: every malformed request is a clean 4xx in
the protocol's own error shape, and the binary framing round-trips."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.errors import InvalidInput
from app.oip.codec import join_bytes, split_bytes

INFER = "/v2/models/classifier/infer"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def framed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def binary_body(head: dict, tail: bytes) -> tuple[bytes, dict]:
    text = json.dumps(head).encode()
    return text + tail, {"Inference-Header-Content-Length": str(len(text))}


def image_input(data, shape=(1, 1), datatype="BYTES", name="image") -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


@pytest.fixture
def post(client):
    def send(body=None, raw: bytes | None = None, headers=None, path: str = INFER):
        if raw is not None:
            return client.post(path, data=raw, headers=headers or {})
        return client.post(path, json=body)

    return send


JPEG = "jpeg"  # replaced by the real JPEG's base64 in the test

BAD_JSON = [
    ("no inputs", {"outputs": []}, 400, "inputs: Field required"),
    ("input not an object", {"inputs": ["x"]}, 400, "inputs.0: Input should be a valid dictionary"),
    (
        "no shape",
        {"inputs": [{"name": "image", "datatype": "BYTES", "data": []}]},
        400,
        "inputs.0.shape: Field required",
    ),
    ("wrong input name", {"inputs": [image_input([JPEG], name="x")]}, 400, "one input, 'image'"),
    ("two inputs", {"inputs": [image_input([JPEG]), image_input([JPEG])]}, 400, "one input"),
    ("wrong datatype", {"inputs": [image_input([1.0], datatype="FP32")]}, 400, "takes encoded files (BYTES or UINT8)"),
    ("an unknown datatype", {"inputs": [image_input([1.0], datatype="FP64")]}, 400, "datatype FP64; send BYTES"),
    ("shape vs data", {"inputs": [image_input([JPEG], shape=(2, 1))]}, 400, "has shape [2, 1] but 1 elements"),
    ("3-d shape", {"inputs": [image_input([JPEG], shape=(1, 1, 1))]}, 400, "send shape [1, 1]"),
    ("not base64", {"inputs": [image_input(["%%%"])]}, 400, "base64"),
    ("no data", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1]}]}, 400, "neither 'data'"),
    ("empty batch", {"inputs": [image_input([], shape=(0, 1))]}, 400, "1 to 32 images"),
    ("33 images", {"inputs": [image_input([JPEG] * 33, shape=(33, 1))]}, 413, "1 to 32 images"),
    ("uint8 out of range", {"inputs": [image_input([300, 1], shape=(2,), datatype="UINT8")]}, 400, "0-255"),
    ("uint8 shape", {"inputs": [image_input([1, 2], shape=(2, 1), datatype="UINT8")]}, 400, "holds one file"),
    ("unknown output", {"inputs": [image_input([JPEG])], "outputs": [{"name": "probs"}]}, 400, "unknown output"),
    (
        "bad k",
        {"inputs": [image_input([JPEG])], "outputs": [{"name": "scores", "parameters": {"classification": -1}}]},
        400,
        "classification: Input should be greater than or equal to 0",
    ),
    ("not an image", {"inputs": [image_input([b64(b"hello")])]}, 400, "not an image"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_requests(post, jpeg_bytes, case, body, status, message):
    text = json.dumps(body).replace(f'"{JPEG}"', f'"{b64(jpeg_bytes)}"')
    r = post(raw=text.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == status and r.is_json and set(r.get_json()) == {"error"}, r.data[:300]
    assert message in r.get_json()["error"]


def test_corrupt_image_names_its_place_in_the_batch(post, jpeg_bytes):
    r = post({"inputs": [image_input([b64(jpeg_bytes), b64(jpeg_bytes[:500])], shape=(2, 1))]})
    assert r.status_code == 400 and r.get_json()["error"].startswith("image 2 of 2: ")


# Each case: (the body, the JSON header's length) -> (the body sent, the header value sent).
BAD_BINARY = {
    "header length past the body": lambda body, n: (body, str(len(body) + 1)),
    "header length not a number": lambda body, n: (body, "ten"),
    "header cut short": lambda body, n: (body, str(n - 3)),
    "binary cut short": lambda body, n: (body[:-10], str(n)),
}


def one_binary_image(jpeg: bytes) -> tuple[bytes, int]:
    tail = framed(jpeg)
    head = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(tail)}}
        ]
    }
    body, headers = binary_body(head, tail)
    return body, int(headers["Inference-Header-Content-Length"])


@pytest.mark.parametrize("case", BAD_BINARY)
def test_bad_binary_requests(post, jpeg_bytes, case):
    raw, length = BAD_BINARY[case](*one_binary_image(jpeg_bytes))
    r = post(raw=raw, headers={"Inference-Header-Content-Length": length})
    assert r.status_code == 400 and set(r.get_json()) == {"error"}, r.data[:300]


def test_truncated_bytes_element(post, jpeg_bytes):
    tail = framed(jpeg_bytes)[:-7]  # the element's length says more than follows
    head = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(tail)}}
        ]
    }
    r = post(raw=binary_body(head, tail)[0], headers=binary_body(head, tail)[1])
    assert r.status_code == 400 and "overruns the buffer" in r.get_json()["error"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/models/nope", 404),
        ("/v2/models/classifier/versions/2", 404),
        ("/v2/models/nope/config", 404),
        ("/v2/models/nope/infer", 404),
        ("/v2/models/classifier/versions/7/infer", 404),
    ],
)
def test_unknown_model_or_version(client, path, status):
    r = client.post(path, json={}) if path.endswith("infer") else client.get(path)
    assert r.status_code == status and "error" in r.get_json()


def test_binary_outputs_and_json_outputs_agree(post, jpeg_bytes):
    tail = framed(jpeg_bytes, jpeg_bytes)
    head = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": len(tail)}}
        ],
        "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
    }
    binary = post(raw=binary_body(head, tail)[0], headers=binary_body(head, tail)[1])
    split = int(binary.headers["Inference-Header-Content-Length"])
    meta = json.loads(binary.data[:split])["outputs"][0]
    scores = struct.unpack(f"<{2 * 1000}f", binary.data[split:])
    assert meta["parameters"]["binary_data_size"] == 8000 and meta["shape"] == [2, 1000]
    as_json = post({"inputs": [image_input([b64(jpeg_bytes)] * 2, shape=(2, 1))]}).get_json()["outputs"][0]
    assert as_json["shape"] == [2, 1000]
    assert max(abs(a - b) for a, b in zip(scores, as_json["data"], strict=True)) < 1e-6


def test_api_key_guards_infer_only(client, app, monkeypatch, jpeg_bytes):
    monkeypatch.setattr(app.extensions["gate"], "_key", b"k" * 20)
    assert client.get("/v2/health/ready").status_code == 200 and client.get("/v2/models/classifier").status_code == 200
    r = client.post(INFER, json={"inputs": [image_input([b64(jpeg_bytes)])]})
    assert r.status_code == 401 and set(r.get_json()) == {"error"}


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_bytes_framing_round_trips(items):
    assert split_bytes(join_bytes(items), "x") == items


@given(st.binary(min_size=1, max_size=64))
def test_bytes_framing_never_reads_past_the_end(raw):
    try:
        items = split_bytes(raw, "x")
    except InvalidInput:
        pass
    else:
        assert join_bytes(items) == raw


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v2/nope"), ("DELETE", "/v2/models/classifier"), ("GET", "/v2/")]
)
def test_unrouted_v2_paths_answer_in_the_protocols_shape(client, method, path):
    r = client.open(path, method=method)
    assert r.status_code in (404, 405) and set(r.get_json()) == {"error"}, r.data


def test_a_header_length_that_only_isdigit_accepts(post, jpeg_bytes):
    body, _ = one_binary_image(jpeg_bytes)
    r = post(raw=body, headers={"Inference-Header-Content-Length": "\u00b2"})
    assert r.status_code == 400 and set(r.get_json()) == {"error"}


# --- the tensor model: FP32 NCHW pixels ------------------------------------------------------

TENSOR = "/v2/models/classifier_tensor/infer"
PIXELS = 3 * 224 * 224


def pixels_head(shape, size: int | None = None, datatype="FP32", name="pixels") -> dict:
    size = 4 * PIXELS * shape[0] if size is None else size
    return {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "parameters": {"binary_data_size": size}}]
    }


def pixel_bytes(n: int, value: float = 128.0) -> bytes:
    return struct.pack("<f", value) * (PIXELS * n)


BAD_TENSORS = [
    ("HWC, not CHW", pixels_head([1, 224, 224, 3]), pixel_bytes(1), 400, "must have shape [N, 3, 224, 224]"),
    (
        "another size",
        pixels_head([1, 3, 256, 256], 4 * 3 * 256 * 256),
        bytes(4 * 3 * 256 * 256),
        400,
        "[N, 3, 224, 224]",
    ),
    ("no batch dimension", pixels_head([3, 224, 224], 4 * PIXELS), pixel_bytes(1), 400, "[N, 3, 224, 224]"),
    ("gray", pixels_head([1, 1, 224, 224], 4 * 224 * 224), pixel_bytes(1)[: 4 * 224 * 224], 400, "[N, 3, 224, 224]"),
    ("empty batch", pixels_head([0, 3, 224, 224], 0), b"", 400, "1 to 32 images"),
    ("33 images", pixels_head([33, 3, 224, 224]), pixel_bytes(33), 413, "1 to 32 images"),
    ("a huge declared batch", pixels_head([2**31 - 1, 3, 224, 224], 4 * PIXELS), pixel_bytes(1), 413, "1 to 32"),
    ("fewer elements than the shape", pixels_head([2, 3, 224, 224], 4 * PIXELS), pixel_bytes(1), 400, "elements"),
    (
        "a partial element",
        pixels_head([1, 3, 224, 224], 4 * PIXELS - 1),
        pixel_bytes(1)[:-1],
        400,
        "whole number of FP32",
    ),
    ("over 255", pixels_head([1, 3, 224, 224]), pixel_bytes(1, 256.0), 400, "0-255 RGB pixels"),
    ("negative (client-normalised)", pixels_head([1, 3, 224, 224]), pixel_bytes(1, -0.5), 400, "0-255 RGB pixels"),
    ("NaN", pixels_head([1, 3, 224, 224]), pixel_bytes(1, float("nan")), 400, "not finite"),
    ("infinity", pixels_head([1, 3, 224, 224]), pixel_bytes(1, float("inf")), 400, "not finite"),
    ("UINT8 pixels", pixels_head([1, 3, 224, 224], PIXELS, "UINT8"), bytes(PIXELS), 400, "takes FP32 pixels"),
    ("encoded files", pixels_head([1, 1], 8, "BYTES"), framed(b"abcd"), 400, "takes FP32 pixels"),
    ("the image input's name", pixels_head([1, 3, 224, 224], name="image"), pixel_bytes(1), 400, "one input, 'pixels'"),
]


@pytest.mark.parametrize(("case", "head", "tail", "status", "message"), BAD_TENSORS, ids=[c[0] for c in BAD_TENSORS])
def test_bad_tensor_requests(post, case, head, tail, status, message):
    r = post(raw=binary_body(head, tail)[0], headers=binary_body(head, tail)[1], path=TENSOR)
    assert r.status_code == status and set(r.get_json()) == {"error"}, r.data[:300]
    assert message in r.get_json()["error"]


@pytest.mark.parametrize(
    ("case", "data", "message"),
    [
        ("booleans", [True] * PIXELS, "FP32 data must be numbers"),
        ("strings", ["1"] * PIXELS, "FP32 data must be numbers"),
        ("a number past float32", [1e39] + [1.0] * (PIXELS - 1), "not finite"),
        ("nested lists are flattened, counts still checked", [[1.0, 2.0]] * 10, "elements"),
    ],
)
def test_bad_tensor_json(post, case, data, message):
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": data}]}
    r = post(body, path=TENSOR)
    assert r.status_code == 400 and message in r.get_json()["error"], r.get_json()


def test_tensor_json_and_binary_agree(post):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, PIXELS).astype("<f4")
    as_json = post(
        {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": pixels.tolist()}]},
        path=TENSOR,
    )
    head = pixels_head([1, 3, 224, 224])
    as_binary = post(
        raw=binary_body(head, pixels.tobytes())[0], headers=binary_body(head, pixels.tobytes())[1], path=TENSOR
    )
    assert as_json.status_code == as_binary.status_code == 200
    assert as_json.get_json()["outputs"][0]["data"] == as_binary.get_json()["outputs"][0]["data"]


@pytest.mark.parametrize(
    "path", ["/v2/models/" + "a" * 5000 + "/infer", "/v2/models/classifier/versions/" + "7" * 5000]
)
def test_a_client_chosen_name_is_cut_in_the_answer(client, path):
    r = client.post(path, json={}) if path.endswith("/infer") else client.get(path)
    assert r.status_code == 404 and len(r.get_json()["error"]) < 400
