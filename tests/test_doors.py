"""Every door through one guarded core, attacked as a client would, on the real stack.

One gunicorn worker with its gRPC listener, behind the repo's nginx (HTTP :8999 and gRPC
:8001 listeners), started with API_KEY. The hostile matrix sends each bad image through
every door (seed multipart, raw and base64 JSON; OIP JSON and binary; gRPC) with the right
key, plus each door's own malformed structures: each must be refused with the same kind of
answer in that door's own shape, never a 5xx. Then every route and RPC is walked without a
key, with a wrong one and with the right one.
"""

from __future__ import annotations

import json

import grpc
import pytest
import requests

from app.oip.grpc_server import pb
from scripts.hostile_inputs import (
    JPEG,
    blank_png,
    ico_holding,
    jpeg_claiming,
    jpeg_with_empty_scans,
    png_bomb,
    zip_bytes,
)
from tests.conftest import free_port, start_gunicorn, start_nginx, stop
from tests.doors import BATCH_DOORS, CLIENT_CODES, DOORS, INFER, Doors, b64, framed, refused_in_shape, stream

KEY = "door-key-" + "x" * 24


@pytest.fixture(scope="module")
def stack(imagenet_ckpt, tmp_path_factory):
    work = tmp_path_factory.mktemp("doors")
    grpc_backend = f"127.0.0.1:{free_port()}"
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(imagenet_ckpt), "WORKERS": "1", "GRPC_BIND": grpc_backend}
    gunicorn, backend = start_gunicorn({**env, "API_KEY": KEY}, work / "gunicorn.log")
    grpc_port = free_port()
    try:
        nginx, url = start_nginx(work / "nginx", [backend.removeprefix("http://")], (grpc_port, [grpc_backend]))
        try:
            yield {"http": url, "grpc": f"127.0.0.1:{grpc_port}", "backend": backend, "log": work / "gunicorn.log"}
        finally:
            stop(nginx)
    finally:
        stop(gunicorn)


@pytest.fixture(scope="module")
def doors(stack):
    d = Doors(stack["http"], stack["grpc"], KEY)
    yield d
    d.channel.close()


# --- bad images, the same through every door ----------------------------------------------

INVALID, TOO_LARGE = "invalid", "too_large"
EXPECT = {INVALID: (400, "INVALID_ARGUMENT"), TOO_LARGE: (413, "RESOURCE_EXHAUSTED")}

BAD_IMAGES = {
    "empty": (b"", INVALID),
    "one-byte": (b"\xff", INVALID),
    "text": (b"just some text\n" * 20, INVALID),
    "html": (b"<html><body>hello</body></html>", INVALID),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', INVALID),
    "pdf": (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", INVALID),
    "zip": (zip_bytes(), INVALID),
    "random-bytes": (bytes(range(256)) * 8, INVALID),
    "zeros-1MiB": (b"\0" * (1 << 20), INVALID),
    "truncated-jpeg": (JPEG[: len(JPEG) // 3], INVALID),
    "jpeg-soi-only": (b"\xff\xd8", INVALID),
    "png-signature-only": (b"\x89PNG\r\n\x1a\n", INVALID),
    "png-header-only": (blank_png(64, 64)[:33], INVALID),
    "gif-header-only": (b"GIF89a", INVALID),
    "webp-header-only": (b"RIFF\x10\0\0\0WEBPVP8 ", INVALID),
    "tiff-garbage": (b"II*\0" + b"\xff" * 64, INVALID),
    "bmp-garbage": (b"BM" + b"\xff" * 64, INVALID),
    "jpeg-claiming-65000x65000": (jpeg_claiming(65000, 65000), TOO_LARGE),
    "png-bomb-12000x12000": (png_bomb(), TOO_LARGE),
    "png-9000x9000": (blank_png(9000, 9000), TOO_LARGE),
    "png-1000000x64": (blank_png(1_000_000, 64), TOO_LARGE),
    "ico-holding-a-20000x20000-png": (ico_holding(blank_png(20_000, 20_000)), INVALID),  # not a format we open
    "jpeg-with-5000-empty-scans": (jpeg_with_empty_scans(5000), TOO_LARGE),
}
IMAGE_CASES = [pytest.param(door, name, id=f"{door}-{name}") for name in BAD_IMAGES for door in DOORS]


@pytest.mark.parametrize(("door", "name"), IMAGE_CASES)
def test_bad_image_through_every_door(doors, door, name):
    data, kind = BAD_IMAGES[name]
    answer = doors.send(door, [data])
    refused_in_shape(door, answer)
    assert answer.status in EXPECT[kind], (answer.status, answer.body)


BATCHES = {
    "second-of-three-corrupt": ([JPEG, JPEG[:2000], JPEG], INVALID, "image 2 of 3"),
    "33-images": ([JPEG] * 33, TOO_LARGE, "33"),
}
BATCH_CASES = [pytest.param(door, name, id=f"{door}-{name}") for name in BATCHES for door in BATCH_DOORS]


@pytest.mark.parametrize(("door", "name"), BATCH_CASES)
def test_bad_batch_through_every_door(doors, door, name):
    blobs, kind, fragment = BATCHES[name]
    answer = doors.send(door, blobs)
    refused_in_shape(door, answer)
    assert answer.status in EXPECT[kind] and fragment in json.dumps(answer.body), (answer.status, answer.body)


@pytest.mark.parametrize("door", DOORS)
def test_a_good_image_through_every_door(doors, door):
    assert doors.send(door, [JPEG]).status in (200, "OK")


# --- each door's own malformed structures ---------------------------------------------------

IMAGE = {"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": [b64(JPEG)]}


def oip(**overrides) -> bytes:
    body = {"inputs": [IMAGE], **overrides}
    return json.dumps(body).encode()


def with_input(**fields) -> bytes:
    return oip(inputs=[{**IMAGE, **fields}])


def with_output(parameters) -> bytes:
    return oip(outputs=[{"name": "scores", "parameters": parameters}])


OIP_JSON = {
    "not-json": b"{nope",
    "empty-body": b"",
    "invalid-utf8": b'{"inputs": "\xff\xfe"}',
    "json-array": b"[1, 2, 3]",
    "json-string": b'"inputs"',
    "nested-10000-deep": b"[" * 10_000 + b"]" * 10_000,
    "nested-objects-40-deep": b'{"a":' * 40 + b"1" + b"}" * 40,
    "no-inputs": b'{"outputs": []}',
    "inputs-not-a-list": b'{"inputs": {"name": "image"}}',
    "inputs-empty": b'{"inputs": []}',
    "input-not-an-object": b'{"inputs": ["x"]}',
    "input-without-name": with_input(name=None),
    "name-10KB": with_input(name="n" * 10_000),
    "shape-5000-digits": oip().replace(b'"shape": [1, 1]', b'"shape": [1, ' + b"9" * 5000 + b"]"),
    "shape-string": with_input(shape="1,1"),
    "shape-null": with_input(shape=None),
    "shape-nan": oip().replace(b'"shape": [1, 1]', b'"shape": [1, NaN]'),
    "shape-infinity": oip().replace(b'"shape": [1, 1]', b'"shape": [1, 1e999]'),
    "shape-float": with_input(shape=[1.5, 1]),
    "shape-bool": with_input(shape=[True, 1]),
    "shape-negative": with_input(shape=[-1, 1]),
    "shape-9-dims": with_input(shape=[1] * 9),
    "shape-2**40": with_input(shape=[2**40, 1]),
    "shape-vs-data": with_input(shape=[2, 1]),
    "datatype-FP32": with_input(datatype="FP32", data=[1.0]),
    "datatype-unknown": with_input(datatype="FOO"),
    "datatype-number": with_input(datatype=7),
    "data-not-a-list": with_input(data="abc"),
    "data-objects": with_input(data=[{"a": 1}]),
    "data-not-base64": with_input(data=["%%%"]),
    "data-numbers-for-bytes": with_input(data=[1, 2]),
    "uint8-out-of-range": with_input(datatype="UINT8", shape=[2], data=[300, 1]),
    "uint8-strings": with_input(datatype="UINT8", shape=[1], data=["a"]),
    "outputs-not-a-list": oip(outputs={"name": "scores"}),
    "output-without-name": oip(outputs=[{"parameters": {}}]),
    "output-unknown": oip(outputs=[{"name": "probs"}]),
    "classification-true": with_output({"classification": True}),
    "classification-string": with_output({"classification": "5"}),
    "classification-negative": with_output({"classification": -1}),
    "classification-float": with_output({"classification": 2.5}),
    "binary-data-string": with_output({"binary_data": "yes"}),
    "parameters-not-an-object": oip(parameters=[1]),
    "parameter-nested": oip(parameters={"x": {"y": 1}}),
    "binary-data-output-number": oip(parameters={"binary_data_output": 1}),
    "id-number": oip(id=5),
    "binary-data-size-negative": with_input(parameters={"binary_data_size": -1}),
    "binary-data-size-string": with_input(parameters={"binary_data_size": "10"}),
}


@pytest.mark.parametrize("name", OIP_JSON)
def test_malformed_oip_json(doors, name):
    answer = doors.oip(OIP_JSON[name])
    refused_in_shape("oip-json", answer)
    assert answer.status in (400, 413), answer.body


def _binary(head: dict, tail: bytes) -> tuple[bytes, int]:
    text = json.dumps(head).encode()
    return text + tail, len(text)


_TAIL = framed(JPEG)
_HEAD = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 0}}]}
_HEAD["inputs"][0]["parameters"]["binary_data_size"] = len(_TAIL)
_BODY, _SPLIT = _binary(_HEAD, _TAIL)
OIP_BINARY = {
    "header-length-past-the-body": (_BODY, len(_BODY) + 1),
    "header-length-not-a-number": (_BODY, "ten"),
    "header-length-negative": (_BODY, "-1"),
    "header-length-exponent": (_BODY, "1e3"),
    "header-length-20-digits": (_BODY, "9" * 20),
    "header-length-superscript": (_BODY, "\u00b2"),  # a digit to str.isdigit(), not to int()
    "header-cut-short": (_BODY, _SPLIT - 3),
    "header-length-zero": (_BODY, 0),
    "binary-cut-short": (_BODY[:-10], _SPLIT),
    "bytes-element-overruns": _binary(_HEAD, framed(JPEG)[:-7]),
    "size-past-the-binary": _binary(
        {"inputs": [{**_HEAD["inputs"][0], "parameters": {"binary_data_size": 10**9}}]}, _TAIL
    ),
    "fp32-binary": _binary({"inputs": [{**_HEAD["inputs"][0], "datatype": "FP32"}]}, _TAIL),
    "length-prefix-only": _binary(
        {"inputs": [{**_HEAD["inputs"][0], "parameters": {"binary_data_size": 4}}]}, b"\xff\xff\xff\xff"
    ),
}


@pytest.mark.parametrize("name", OIP_BINARY)
def test_malformed_oip_binary(doors, name):
    body, length = OIP_BINARY[name]
    answer = doors.oip(body, length)
    refused_in_shape("oip-binary", answer)


MULTIPART_NO_NAME = (
    b'--XX\r\nContent-Disposition: form-data; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    + JPEG
    + b"\r\n--XX--\r\n"
)
SEED = {
    "json-nested-10000-deep": {"data": b"[" * 10_000 + b"]" * 10_000, "headers": {"Content-Type": "application/json"}},
    "json-5000-digit-number": {
        "data": b'{"image": ' + b"9" * 5000 + b"}",
        "headers": {"Content-Type": "application/json"},
    },
    "json-nan": {"data": b'{"image": NaN}', "headers": {"Content-Type": "application/json"}},
    "json-invalid-utf8": {"data": b'{"image": "\xff"}', "headers": {"Content-Type": "application/json"}},
    "json-not-an-object": {"json": ["a"]},
    "json-image-number": {"json": {"image": 5}},
    "json-images-numbers": {"json": {"images": [1, 2]}},
    "json-images-nested": {"json": {"images": [["a"]]}},
    "json-bad-data-uri": {"json": {"image": "data:image/png;base64,%%%"}},
    "json-no-image": {"json": {"picture": b64(JPEG)}},
    "multipart-part-without-name": {
        "data": MULTIPART_NO_NAME,
        "headers": {"Content-Type": "multipart/form-data; boundary=XX"},
    },
    "multipart-wrong-field": {"files": [("file", ("a.jpg", JPEG, "image/jpeg"))]},
    "multipart-no-boundary": {"data": b"--XX\r\n\r\n", "headers": {"Content-Type": "multipart/form-data"}},
    "multipart-unterminated": {
        "data": b'--XX\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nabc',
        "headers": {"Content-Type": "multipart/form-data; boundary=XX"},
    },
    "unsupported-content-type": {"data": b"x", "headers": {"Content-Type": "text/csv"}},
    "content-type-garbage": {"data": b"x", "headers": {"Content-Type": ";;;===\x7f"}},
    # nginx passes a control character in any header on; gunicorn 27 refuses it (RFC 9110 5.5)
    "control-char-in-a-header": {"data": JPEG, "headers": {"Content-Type": "image/jpeg", "X-Note": "a\x7fb"}},
}


@pytest.mark.parametrize("name", SEED)
def test_malformed_seed_requests(doors, name):
    refused_in_shape("seed-json", doors.seed(**SEED[name]))


def _infer(**fields) -> bytes:
    msg = pb.ModelInferRequest(model_name="classifier")
    item = msg.inputs.add(name="image", datatype=fields.pop("datatype", "BYTES"))
    item.shape.extend(fields.pop("shape", [1, 1]))
    msg.raw_input_contents.append(fields.pop("raw", framed(JPEG)))
    for key, value in fields.pop("input_params", {}).items():
        item.parameters[key].CopyFrom(value)
    out_params = fields.pop("output_params", None)
    if out_params is not None:
        out = msg.outputs.add(name="scores")
        for key, value in out_params.items():
            out.parameters[key].CopyFrom(value)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg.SerializeToString()


def _two_inputs() -> bytes:
    msg = pb.ModelInferRequest.FromString(_infer())
    msg.inputs.add(name="image2", datatype="BYTES").shape.extend([1, 1])
    msg.raw_input_contents.append(framed(JPEG))
    return msg.SerializeToString()


def _uint8_typed(values) -> bytes:
    msg = pb.ModelInferRequest(model_name="classifier")
    item = msg.inputs.add(name="image", datatype="UINT8")
    item.shape.append(len(values))
    item.contents.uint_contents.extend(values)
    return msg.SerializeToString()


P = pb.InferParameter
GRPC = {
    "undecodable-bytes": ("ModelInfer", b"\xff\xff\xff\xff not protobuf"),
    "undecodable-metadata-request": ("ModelMetadata", b"\x0a\xff"),
    "truncated-message": ("ModelInfer", _infer()[:50]),
    "classification-string": ("ModelInfer", _infer(output_params={"classification": P(string_param="five")})),
    "classification-bool": ("ModelInfer", _infer(output_params={"classification": P(bool_param=True)})),
    "classification-negative": ("ModelInfer", _infer(output_params={"classification": P(int64_param=-3)})),
    "binary-data-size-string": ("ModelInfer", _infer(input_params={"binary_data_size": P(string_param="x")})),
    "shape-negative": ("ModelInfer", _infer(shape=[-1, 1])),
    "shape-huge": ("ModelInfer", _infer(shape=[2**62, 1])),
    "shape-9-dims": ("ModelInfer", _infer(shape=[1] * 9)),
    "shape-vs-data": ("ModelInfer", _infer(shape=[3, 1])),
    "datatype-FP32": ("ModelInfer", _infer(datatype="FP32")),
    "bytes-framing-truncated": ("ModelInfer", _infer(raw=framed(JPEG)[:-9])),
    "two-inputs": ("ModelInfer", _two_inputs()),
    "uint8-typed-over-255": ("ModelInfer", _uint8_typed([300, 1])),
    "unknown-model": ("ModelInfer", _infer(model_name="nope")),
    "unknown-version": ("ModelInfer", _infer(model_version="7")),
    "no-inputs": ("ModelInfer", pb.ModelInferRequest(model_name="classifier").SerializeToString()),
    "metadata-unknown-model": ("ModelMetadata", pb.ModelMetadataRequest(name="nope").SerializeToString()),
    "config-unknown-version": (
        "ModelConfig",
        pb.ModelConfigRequest(name="classifier", version="../../etc").SerializeToString(),
    ),
}


@pytest.mark.parametrize("name", GRPC)
def test_malformed_grpc(doors, name):
    method, raw = GRPC[name]
    refused_in_shape("grpc", doors.rpc(method, raw))


@pytest.mark.parametrize(
    ("method", "metadata"),
    [
        ("ModelInfer", (("authorization", "Bearer x"), ("authorization", f"Bearer {KEY}"))),
        ("ModelInfer ", (("authorization", f"Bearer {KEY}"),)),
    ],
    ids=["repeated-authorization", "trailing-space-in-the-method"],
)
def test_what_nginx_refuses_on_grpc_is_not_internal(doors, method, metadata):
    """nginx's own 400 on its gRPC port: a client status, not grpcio's INTERNAL for a bare 400."""
    call = doors.channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
    with pytest.raises(grpc.RpcError) as err:
        call(_infer(), metadata=metadata, timeout=30)
    assert err.value.code() in CLIENT_CODES, (err.value.code(), err.value.details())


def test_undecodable_grpc_is_invalid_argument(doors):
    assert doors.rpc("ModelInfer", b"\xff\xff garbage").status == "INVALID_ARGUMENT"


def test_the_worker_survived_the_matrix(doors, stack):
    """No request above restarted or hung the worker: the same pid answers, at once."""
    assert doors.send("grpc", [JPEG]).status == "OK"
    assert "Booting worker" in stack["log"].read_text()
    assert stack["log"].read_text().count("Booting worker") == 1


# --- model versions, as documented ----------------------------------------------------------


def test_the_reported_version_answers_on_both_transports(doors):
    meta = requests.get(doors.http + "/v2/models/classifier", headers=doors.headers(), timeout=10).json()
    (version,) = meta["versions"]
    for suffix in ("", "/ready", "/config"):
        r = requests.get(f"{doors.http}/v2/models/classifier/versions/{version}{suffix}", headers=doors.headers())
        assert r.status_code == 200, (suffix, r.text)
    raw = pb.ModelMetadataRequest(name="classifier", version=version).SerializeToString()
    assert doors.rpc("ModelMetadata", raw).status == "OK"
    assert requests.get(doors.http + "/v2/models/classifier/versions/1", timeout=10).status_code == 404


# --- the API key on every route and RPC -----------------------------------------------------

# (method, path, needs the key). Probes and descriptions stay open (docs/security.md, "Security").
HTTP_ROUTES = [
    ("GET", "/health", False),
    ("GET", "/ready", False),
    ("GET", "/", False),
    ("GET", "/openapi.json", False),
    ("GET", "/v2", False),
    ("GET", "/v2/health/live", False),
    ("GET", "/v2/health/ready", False),
    ("GET", "/v2/models/classifier", False),
    ("GET", "/v2/models/classifier/ready", False),
    ("GET", "/v2/models/classifier/config", False),
    ("GET", "/metrics", True),
    ("POST", "/model_predict", True),
    ("POST", INFER, True),
]
RPCS = [
    ("ServerLive", pb.ServerLiveRequest(), False),
    ("ServerReady", pb.ServerReadyRequest(), False),
    ("ModelReady", pb.ModelReadyRequest(name="classifier"), False),
    ("ServerMetadata", pb.ServerMetadataRequest(), False),
    ("ModelMetadata", pb.ModelMetadataRequest(name="classifier"), False),
    ("ModelConfig", pb.ModelConfigRequest(name="classifier"), False),
    ("ModelInfer", pb.ModelInferRequest.FromString(_infer()), True),
]
KEYS = {"none": None, "wrong": "wrong-key-" + "y" * 24, "wrong-length": "k", "right": KEY}


def _http_body(path: str) -> dict:
    if path == "/model_predict":
        return {"files": {"image": ("a.jpg", JPEG, "image/jpeg")}}
    if path == INFER:
        return {"data": oip(), "headers": {"Content-Type": "application/json"}}
    return {}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("method", "path", "protected"), HTTP_ROUTES, ids=[f"{m} {p}" for m, p, _ in HTTP_ROUTES])
def test_every_http_route_with_and_without_the_key(stack, method, path, protected, key):
    kwargs = _http_body(path)
    headers = {**kwargs.pop("headers", {}), **({"X-API-Key": KEYS[key]} if KEYS[key] else {})}
    r = requests.request(method, stack["http"] + path, headers=headers, timeout=60, **kwargs)
    if protected and key != "right":
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), r.text
        assert ("error" in r.json()) and "Traceback" not in r.text
    else:
        assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("method", "message", "protected"), RPCS, ids=[m for m, _, _ in RPCS])
def test_every_rpc_with_and_without_the_key(doors, method, message, protected, key):
    answer = doors.rpc(method, message.SerializeToString(), key=KEYS[key])
    assert answer.status == ("UNAUTHENTICATED" if protected and key != "right" else "OK"), answer.body


def test_grpc_takes_the_key_from_x_api_key_too(doors):
    call = doors.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    call(_infer(), metadata=(("x-api-key", KEY),), timeout=60)


def test_an_unauthenticated_rpc_is_refused_before_its_message_is_read(doors):
    """Garbage without a key is UNAUTHENTICATED, not INVALID_ARGUMENT: the key comes first."""
    assert doors.rpc("ModelInfer", b"\xff garbage", key=None).status == "UNAUTHENTICATED"


def test_the_gate_counts_and_logs_every_door_alike(stack, doors):
    text = requests.get(stack["http"] + "/metrics", headers=doors.headers(), timeout=10).text
    assert 'endpoint="grpc:ModelInfer",status="UNAUTHENTICATED"' in text
    assert 'endpoint="/model_predict",status="401"' in text
    lines = [json.loads(line) for line in stack["log"].read_text().splitlines() if line.startswith('{"ts"')]
    paths = {line["path"] for line in lines if line.get("msg") == "request"}
    assert {"grpc:ModelInfer", "/model_predict", INFER} <= paths


# --- TorchServe's inference API (app/torchserve) ----------------------------------------------
# Its door forms (raw body, form part 'data') are in DOORS, so the matrix above covers them.

# (method, path, needs the key): predictions and the per-worker description need it, the
# probe and the model list stay open (app/torchserve/http.py says why).
TORCHSERVE_ROUTES = [
    ("PUT", "/predictions/classifier", True),
    ("POST", "/predictions/classifier", True),
    ("GET", "/models/classifier", True),
    ("GET", "/ping", False),
    ("GET", "/models", False),
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    ("method", "path", "protected"), TORCHSERVE_ROUTES, ids=[f"{m} {p}" for m, p, _ in TORCHSERVE_ROUTES]
)
def test_every_torchserve_route_with_and_without_the_key(stack, method, path, protected, key):
    headers = {"X-API-Key": KEYS[key]} if KEYS[key] else {}
    data = JPEG if path.startswith("/predictions") else None
    r = requests.request(method, stack["http"] + path, data=data, headers=headers, timeout=60)
    if protected and key != "right":
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), r.text
        assert r.json()["type"] == "InvalidKeyException"
    else:
        assert r.status_code == 200, r.text[:300]


def test_the_gate_counts_torchserve_like_every_door(stack, doors):
    requests.put(stack["http"] + "/predictions/classifier", data=JPEG, timeout=60)  # no key: 401
    text = requests.get(stack["http"] + "/metrics", headers=doors.headers(), timeout=10).text
    assert 'endpoint="/predictions/<model>",status="401"' in text


# --- the tensor model and gRPC streaming (app/oip/models.py, app/oip/grpc_stream.py) ----------
# The stream is in DOORS and BATCH_DOORS, so the image matrix above covers it.

TENSOR_ROUTES = [
    ("GET", "/v2/models/classifier_tensor", False),
    ("GET", "/v2/models/classifier_tensor/ready", False),
    ("GET", "/v2/models/classifier_tensor/config", False),
    ("POST", "/v2/models/classifier_tensor/infer", True),
]


def _pixels_body() -> tuple[bytes, dict]:
    tail = bytes(4 * 3 * 224 * 224)  # zeros: black pixels
    head = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 224, 224],
                        "parameters": {"binary_data_size": len(tail)}}]}  # fmt: skip
    text = json.dumps(head).encode()
    return text + tail, {"Inference-Header-Content-Length": str(len(text))}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("method", "path", "protected"), TENSOR_ROUTES, ids=[f"{m} {p}" for m, p, _ in TENSOR_ROUTES])
def test_every_tensor_route_with_and_without_the_key(stack, method, path, protected, key):
    body, headers = _pixels_body() if method == "POST" else (None, {})
    headers = {**headers, **({"X-API-Key": KEYS[key]} if KEYS[key] else {})}
    r = requests.request(method, stack["http"] + path, data=body, headers=headers, timeout=60)
    if protected and key != "right":
        assert r.status_code == 401 and set(r.json()) == {"error"}, r.text
    else:
        assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize("key", KEYS)
def test_a_stream_with_and_without_the_key(doors, key):
    answers = stream(doors, [_infer(), _infer()], key=KEYS[key])
    if key == "right":
        assert [a.status for a in answers] == ["OK", "OK"]
    else:
        assert [a.status for a in answers] == ["UNAUTHENTICATED"], answers


def test_an_unauthenticated_stream_is_refused_before_any_message_is_read(doors):
    assert [a.status for a in stream(doors, [b"\xff garbage"], key=None)] == ["UNAUTHENTICATED"]


def test_garbage_on_a_stream_is_answered_in_band_and_the_stream_goes_on(doors):
    answers = stream(doors, [b"\xff garbage", _infer()])
    assert answers[0].status == "INVALID_ARGUMENT" and "does not decode" in answers[0].body
    assert answers[1].status == "OK"


def test_the_gate_counts_stream_messages_like_every_door(stack, doors):
    text = requests.get(stack["http"] + "/metrics", headers=doors.headers(), timeout=10).text
    assert 'endpoint="grpc:ModelStreamInfer",status="OK"' in text
    assert 'endpoint="grpc:ModelStreamInfer",status="UNAUTHENTICATED"' in text
    assert 'endpoint="grpc:ModelStreamInfer",status="INVALID_ARGUMENT"' in text
