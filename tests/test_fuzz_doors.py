"""Fuzzing every door's parser with hypothesis: whatever arrives, the answer is a 200 or a
refusal in that door's own shape (tests/doors.py), never a 5xx or INTERNAL.

In-process: the HTTP doors through Flask's test client, gRPC through a real grpcio listener
on loopback serving the same app's gate. Strategies mix random structures with mutations of
valid requests, so the fuzzer gets past the first check into the deeper ones.
"""

from __future__ import annotations

import base64
import json
import struct

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.oip import grpc_server
from scripts.hostile_inputs import JPEG
from tests.conftest import free_port
from tests.doors import Answer, ok_or_refused

pb = grpc_server.pb
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL = base64.b64encode(JPEG[:200]).decode()  # a corrupt image: decoding, but cheap

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
VALID = {
    "id": "1",
    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": [SMALL]}],
    "outputs": [{"name": "scores", "parameters": {"classification": 3}}],
}
PATHS = [("id",), ("inputs",), ("inputs", 0), ("inputs", 0, "name"), ("inputs", 0, "datatype"), ("inputs", 0, "shape")]
PATHS += [("inputs", 0, "data"), ("inputs", 0, "parameters"), ("outputs",), ("outputs", 0, "parameters")]
PATHS += [("outputs", 0, "parameters", "classification"), ("parameters",)]


@st.composite
def mutated_requests(draw):
    body = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = draw(st.sampled_from(PATHS))
        node = body
        for key in parents:
            node = node[key] if isinstance(node, dict | list) and _has(node, key) else None
        if isinstance(node, dict | list) and (isinstance(node, dict) or _has(node, last)):
            node[last] = draw(json_values)
    return body


def _has(node, key) -> bool:
    return key in node if isinstance(node, dict) else isinstance(key, int) and key < len(node)


def flask_answer(r) -> Answer:
    return Answer(r.status_code, r.get_json(silent=True) if r.is_json else r.data, dict(r.headers))


@FUZZ
@given(st.one_of(mutated_requests(), json_values))
def test_oip_json(client, body):
    r = client.post("/v2/models/classifier/infer", data=json.dumps(body), content_type="application/json")
    ok_or_refused("oip-json", flask_answer(r))


@FUZZ
@given(mutated_requests(), st.binary(max_size=64), st.one_of(st.none(), st.integers(-5, 5000), st.text(max_size=6)))
def test_oip_binary(client, head, tail, length):
    text = json.dumps(head).encode()
    declared = len(text) if length is None else length
    headers = {"Inference-Header-Content-Length": str(declared)}
    r = client.post("/v2/models/classifier/infer", data=text + tail, headers=headers)
    ok_or_refused("oip-binary", flask_answer(r))


header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=30)


@FUZZ
@given(
    st.lists(st.tuples(header_text, st.binary(max_size=40)), max_size=3),
    st.sampled_from([b"--B\r\n", b"--B--\r\n", b"\r\n", b""]),
)
def test_multipart(client, parts, ending):
    body = b"".join(b"--B\r\nContent-Disposition: " + h.encode("latin-1") + b"\r\n\r\n" + d + b"\r\n" for h, d in parts)
    r = client.post("/model_predict", data=body + ending, content_type="multipart/form-data; boundary=B")
    ok_or_refused("seed-multipart", flask_answer(r))


@FUZZ
@given(
    st.one_of(
        json_values, st.fixed_dictionaries({"image": json_values}), st.fixed_dictionaries({"images": json_values})
    )
)
def test_seed_json(client, body):
    r = client.post("/model_predict", data=json.dumps(body), content_type="application/json")
    ok_or_refused("seed-json", flask_answer(r))


@pytest.fixture(scope="module")
def rpc(multiclass_app):
    bind = f"127.0.0.1:{free_port()}"
    server = grpc_server.start(multiclass_app.extensions["oip"], multiclass_app.extensions["gate"], bind, 4, 1 << 22)
    channel = grpc.insecure_channel(bind)

    def call(method: str, raw: bytes) -> Answer:
        stub = channel.unary_unary(f"/{grpc_server.SERVICE}/{method}")
        try:
            return Answer("OK", stub(raw, timeout=30), {})
        except grpc.RpcError as exc:
            return Answer(exc.code().name, exc.details(), {})

    yield call
    channel.close()
    server.stop(0)


params = st.dictionaries(
    st.sampled_from(["classification", "binary_data_size", "binary_data", "x"]),
    st.one_of(
        st.builds(pb.InferParameter, bool_param=st.booleans()),
        st.builds(pb.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
        st.builds(pb.InferParameter, string_param=st.text(max_size=8)),
    ),
    max_size=2,
)


@st.composite
def infer_messages(draw) -> bytes:
    msg = pb.ModelInferRequest(model_name=draw(st.sampled_from(["classifier", "", "x"])), id=draw(st.text(max_size=8)))
    for _ in range(draw(st.integers(0, 2))):
        item = msg.inputs.add(name=draw(st.sampled_from(["image", "", "y"])))
        item.datatype = draw(st.sampled_from(["BYTES", "UINT8", "FP32", ""]))
        item.shape.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 3), max_size=3)))
        for key, value in draw(params).items():
            item.parameters[key].CopyFrom(value)
        if draw(st.booleans()):
            blobs = draw(st.lists(st.sampled_from([JPEG[:300], b"", b"x"]), max_size=2))
            msg.raw_input_contents.append(b"".join(struct.pack("<I", len(b)) + b for b in blobs))
    for _ in range(draw(st.integers(0, 2))):
        out = msg.outputs.add(name=draw(st.sampled_from(["scores", "z"])))
        for key, value in draw(params).items():
            out.parameters[key].CopyFrom(value)
    return msg.SerializeToString()


@FUZZ
@given(st.one_of(infer_messages(), st.binary(max_size=80)))
def test_grpc_messages(rpc, raw):
    ok_or_refused("grpc", rpc("ModelInfer", raw))


@FUZZ
@given(st.sampled_from(["ModelMetadata", "ModelConfig", "ModelReady", "ServerMetadata"]), st.binary(max_size=40))
def test_grpc_other_methods(rpc, method, raw):
    ok_or_refused("grpc", rpc(method, raw))
