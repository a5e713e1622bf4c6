"""Every door as a client reaches it: one `send` per door, taking images or a raw body, and
one check that an answer is a refusal in that door's own protocol shape.

Shared by the hostile matrix (tests/test_doors.py), the API-key walk and the fuzzers.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import requests

from app.core.guard import SAFE_ID
from app.oip.grpc_server import SERVICE, pb

INFER = "/v2/models/classifier/infer"
CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
}


@dataclass
class Answer:
    status: int | str  # HTTP status, or the gRPC code's name
    body: object  # parsed JSON, the gRPC details string, or raw bytes that did not parse
    headers: dict


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def framed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _http(method: str, url: str, **kwargs) -> Answer:
    r = requests.request(method, url, timeout=60, **kwargs)
    try:
        body = r.json()
    except ValueError:
        body = r.content
    return Answer(r.status_code, body, dict(r.headers))


class Doors:
    """The stack's doors: HTTP through nginx (`http`), gRPC through nginx (`grpc`)."""

    def __init__(self, http: str, grpc_target: str, key: str | None):
        self.http, self.key = http, key
        self.channel = grpc.insecure_channel(grpc_target, options=[("grpc.max_send_message_length", 64 << 20)])

    def headers(self, key: str | None = ...) -> dict:
        key = self.key if key is ... else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def metadata(self, key: str | None = ...) -> tuple:
        key = self.key if key is ... else key
        return (("authorization", f"Bearer {key}"),) if key else ()

    # --- raw bodies, per door ---
    def seed(self, key=..., **kwargs) -> Answer:
        return _http(
            "POST", self.http + "/model_predict", headers={**self.headers(key), **kwargs.pop("headers", {})}, **kwargs
        )

    def oip(self, body: bytes, header_length: int | str | None = None, key=..., path: str = INFER) -> Answer:
        headers = {"Content-Type": "application/json", **self.headers(key)}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        return _http("POST", self.http + path, data=body, headers=headers)

    def rpc(self, method: str, raw: bytes, key=...) -> Answer:
        call = self.channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=None)
        try:
            reply, info = call.with_call(raw, metadata=self.metadata(key), timeout=60)
        except grpc.RpcError as exc:
            return Answer(exc.code().name, exc.details(), dict(exc.initial_metadata() or ()))
        return Answer("OK", reply, dict(info.initial_metadata()))

    # --- images, per door ---
    def send(self, door: str, blobs: list[bytes]) -> Answer:
        if door == "seed-multipart":
            return self.seed(files=[("image", (f"{i}.jpg", blob, "image/jpeg")) for i, blob in enumerate(blobs)])
        if door == "seed-raw":
            (blob,) = blobs
            return self.seed(data=blob, headers={"Content-Type": "image/jpeg"})
        if door == "seed-json":
            return self.seed(json={"images": [b64(b) for b in blobs]})
        tensor = {"name": "image", "datatype": "BYTES", "shape": [len(blobs), 1]}
        if door == "oip-json":
            return self.oip(json.dumps({"inputs": [{**tensor, "data": [b64(b) for b in blobs]}]}).encode())
        if door == "oip-binary":
            tail = framed(*blobs)
            head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(tail)}}]}).encode()
            return self.oip(head + tail, len(head))
        if door == "grpc":
            msg = pb.ModelInferRequest(model_name="classifier")
            item = msg.inputs.add(name="image", datatype="BYTES")
            item.shape.extend([len(blobs), 1])
            msg.raw_input_contents.append(framed(*blobs))
            return self.rpc("ModelInfer", msg.SerializeToString())
        if door in SENDERS:
            return SENDERS[door](self, blobs)
        raise ValueError(door)


DOORS = ["seed-multipart", "seed-raw", "seed-json", "oip-json", "oip-binary", "grpc"]
BATCH_DOORS = [d for d in DOORS if d != "seed-raw"]
# Doors added later, each in its own section at the end: how to send to it, how it refuses.
SENDERS: dict[str, Callable[[Doors, list[bytes]], Answer]] = {}
SHAPES: dict[str, Callable[[Answer], None]] = {}


def refused_in_shape(door: str, answer: Answer) -> None:
    """A 4xx (or a client-error gRPC code) in the door's own error shape, never a 5xx."""
    if door in SHAPES:
        SHAPES[door](answer)
        return
    if door == "grpc":
        assert answer.status in {c.name for c in CLIENT_CODES}, (answer.status, answer.body)
        assert isinstance(answer.body, str) and answer.body and "Traceback" not in answer.body
        return
    assert 400 <= answer.status < 500, (answer.status, answer.body)
    assert isinstance(answer.body, dict), answer.body
    if door.startswith("oip"):
        assert set(answer.body) == {"error"}, answer.body
    else:
        assert set(answer.body) == {"status", "error", "message", "request_id"}, answer.body
        assert answer.body["request_id"] == answer.headers["X-Request-ID"]
    assert "Traceback" not in json.dumps(answer.body)


def ok_or_refused(door: str, answer: Answer) -> None:
    if answer.status not in (200, "OK"):
        refused_in_shape(door, answer)


# --- TorchServe's inference API (app/torchserve) ----------------------------------------------

TORCHSERVE = "/predictions/classifier"


def _torchserve(form: bool) -> Callable[[Doors, list[bytes]], Answer]:
    """The image as the body (curl -T), or a form part 'data' (curl -F data=@...)."""

    def send(doors: Doors, blobs: list[bytes]) -> Answer:
        (blob,) = blobs  # its image classifier takes one file per request: in no BATCH_DOORS
        if form:
            return _http("POST", doors.http + TORCHSERVE, files={"data": ("0.jpg", blob)}, headers=doors.headers())
        return _http("PUT", doors.http + TORCHSERVE, data=blob, headers=doors.headers())

    return send


def _torchserve_refused(answer: Answer) -> None:
    assert 400 <= answer.status < 500, (answer.status, answer.body)
    assert isinstance(answer.body, dict) and set(answer.body) == {"code", "type", "message"}, answer.body
    assert answer.body["code"] == answer.status and answer.body["type"].endswith("Exception"), answer.body
    assert SAFE_ID.fullmatch(answer.headers["X-Request-ID"]) and "Traceback" not in json.dumps(answer.body)


for _door, _form in (("torchserve-raw", False), ("torchserve-form", True)):
    SENDERS[_door], SHAPES[_door] = _torchserve(_form), _torchserve_refused
    DOORS.append(_door)


# --- gRPC ModelStreamInfer (app/oip/grpc_stream.py) -------------------------------------------

STREAM = f"/{SERVICE}/ModelStreamInfer"


def stream(doors: Doors, messages: list[bytes], key=...) -> list[Answer]:
    """Messages on one stream; each answer is OK, or the in-band error_message under the code
    its grpc_status parameter names (a refused stream: its gRPC code)."""
    call = doors.channel.stream_stream(STREAM, response_deserializer=pb.ModelStreamInferResponse.FromString)
    try:
        replies = list(call(iter(messages), metadata=doors.metadata(key), timeout=60))
    except grpc.RpcError as exc:
        return [Answer(exc.code().name, exc.details(), {})]
    return [
        Answer(r.infer_response.parameters["grpc_status"].string_param, r.error_message, {})
        if r.error_message
        else Answer("OK", r, {})
        for r in replies
    ]


def _stream_send(doors: Doors, blobs: list[bytes]) -> Answer:
    msg = pb.ModelInferRequest(model_name="classifier", id="matrix")
    item = msg.inputs.add(name="image", datatype="BYTES")
    item.shape.extend([len(blobs), 1])
    msg.raw_input_contents.append(framed(*blobs))
    (answer,) = stream(doors, [msg.SerializeToString()])
    return answer


def _stream_refused(answer: Answer) -> None:
    """In-band, as Triton answers on a stream: an error_message with a client-error code."""
    assert answer.status in {c.name for c in CLIENT_CODES}, (answer.status, answer.body)
    assert isinstance(answer.body, str) and answer.body, answer.body
    assert "internal server error" not in answer.body and "Traceback" not in answer.body


SENDERS["grpc-stream"], SHAPES["grpc-stream"] = _stream_send, _stream_refused
DOORS.append("grpc-stream")
BATCH_DOORS.append("grpc-stream")
