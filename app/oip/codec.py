"""Open Inference Protocol wire codecs, shared by the HTTP and gRPC front doors.

Both transports turn their message into one `InferRequest` and an `InferResponse` back into
their message; what the request means is decided once, in `app.oip.dataplane`.

- HTTP: a JSON body, or the binary tensor extension (`Inference-Header-Content-Length`: that
  many bytes of JSON, then each binary input's bytes in order, sized by `binary_data_size`).
- gRPC: `raw_input_contents` / `raw_output_contents`, or typed `contents`.
- BYTES tensors in binary form: each element is a 4-byte little-endian length, then the bytes.
  In JSON, a BYTES element is a string: base64 for inputs (a JPEG is not text), UTF-8 text for
  outputs (the classification strings).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from app.core.errors import invalid
from app.core.safejson import load_json
from app.oip.schema import InferenceRequest, RequestInput, validate


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[bytes] | np.ndarray  # BYTES elements, or a flat numeric array


@dataclass
class Requested:
    name: str
    classification: int = 0  # the classification extension's k; 0 = the tensor itself
    binary: bool | None = None  # None: the request-level default


@dataclass
class InferRequest:
    id: str = ""
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Requested] = field(default_factory=list)
    binary_output: bool = False  # request parameter binary_data_output


bad = invalid  # every codec refusal is the protocol's 400 / INVALID_ARGUMENT


def split_bytes(raw: bytes, where: str) -> list[bytes]:
    """BYTES elements from their length-prefixed form; a truncated buffer is a client error."""
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise bad(f"{where}: truncated BYTES element length at byte {at}")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise bad(f"{where}: BYTES element of {size} bytes overruns the buffer ({len(raw) - at} left)")
        items.append(raw[at : at + size])
        at += size
    return items


def join_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def raw_tensor(name: str, datatype: str, shape: list[int], raw: bytes) -> Tensor:
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, split_bytes(raw, f"input {name!r}"))
    if datatype == "UINT8":
        return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=np.uint8))
    raise bad(f"input {name!r} has datatype {datatype}; send BYTES (encoded images) or UINT8 (one file)")


def raw_output(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return join_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data, dtype="<f4").tobytes()


# --- HTTP --------------------------------------------------------------------------------------


def _leaves(data: list) -> Iterator:
    """The elements of JSON `data`, flat in row-major order, however the client nested them
    (the protocol allows both); depth is already bounded by app.core.safejson."""
    for item in data:
        if isinstance(item, list):
            yield from _leaves(item)
        else:
            yield item


def _json_input(item: RequestInput, binary: memoryview, at: int) -> tuple[Tensor, int]:
    name, datatype, shape = item.name, item.datatype, item.shape
    size = item.parameters.binary_data_size
    if size is not None:
        if at + size > len(binary):
            raise bad(f"input {name!r}: binary_data_size {size} overruns the {len(binary) - at} binary bytes left")
        return raw_tensor(name, datatype, shape, bytes(binary[at : at + size])), at + size
    if item.data is None:
        raise bad(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    flat = list(_leaves(item.data))
    if datatype == "BYTES":
        try:
            return Tensor(name, datatype, shape, [base64.b64decode(x, validate=True) for x in flat]), at
        except (binascii.Error, ValueError, TypeError):
            raise bad(f"input {name!r}: BYTES elements in JSON must be base64 strings") from None
    if datatype == "UINT8":
        values = [x for x in flat if isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255]
        if len(values) != len(flat):
            raise bad(f"input {name!r}: UINT8 data must be integers 0-255")
        return Tensor(name, datatype, shape, np.array(values, dtype=np.uint8)), at
    raise bad(f"input {name!r} has datatype {datatype}; send BYTES (encoded images) or UINT8 (one file)")


def _request(head: InferenceRequest, inputs: list[Tensor]) -> InferRequest:
    outputs = [Requested(o.name, o.parameters.classification, o.parameters.binary_data) for o in head.outputs]
    return InferRequest(head.id, inputs, outputs, head.parameters.binary_data_output)


def parse_http(body: bytes, header_length: str | None) -> InferRequest:
    """An HTTP infer body, JSON or with the binary tensor extension."""
    if header_length is None:
        split = len(body)
    elif re.fullmatch(r"[0-9]{1,10}", header_length):  # not isdigit(): "²" is a digit to it, not to int()
        split = int(header_length)
    else:
        raise bad("Inference-Header-Content-Length is not a byte count")
    if split > len(body):
        raise bad(f"Inference-Header-Content-Length {split} exceeds the body ({len(body)} bytes)")
    head = validate(load_json(body[:split], "invalid_request", "the inference header"))
    binary, at, inputs = memoryview(body)[split:], 0, []
    for item in head.inputs:
        tensor, at = _json_input(item, binary, at)
        inputs.append(tensor)
    return _request(head, inputs)


def encode_http(request: InferRequest, model: str, version: str, outputs: list[Tensor]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    wanted = {r.name: r for r in request.outputs}
    head, tail = [], []
    for tensor in outputs:
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        binary = wanted[tensor.name].binary if tensor.name in wanted else None
        if request.binary_output if binary is None else binary:
            raw = raw_output(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        elif tensor.datatype == "BYTES":
            entry["data"] = [item.decode() for item in tensor.data]
        else:
            entry["data"] = [float(x) for x in np.ravel(tensor.data)]
        head.append(entry)
    body = {"model_name": model, "model_version": version, "outputs": head}
    if request.id:
        body["id"] = request.id
    text = json.dumps(body, separators=(",", ":")).encode()
    return text + b"".join(tail), (len(text) if tail else None)


# --- gRPC --------------------------------------------------------------------------------------


def _grpc_params(params) -> dict:
    """A protobuf parameter map as plain values, for the schema to check."""
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "bool_param") for key, value in params.items()}


def parse_grpc(msg) -> InferRequest:
    """A ModelInferRequest: raw_input_contents (one per input, in order) or typed contents."""
    head = validate(
        {
            "id": msg.id,
            "parameters": _grpc_params(msg.parameters),
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(t.shape),
                    "parameters": _grpc_params(t.parameters),
                }
                for t in msg.inputs
            ],
            "outputs": [{"name": o.name, "parameters": _grpc_params(o.parameters)} for o in msg.outputs],
        }
    )
    if msg.raw_input_contents and len(msg.raw_input_contents) != len(msg.inputs):
        raise bad(f"{len(msg.raw_input_contents)} raw_input_contents for {len(msg.inputs)} inputs")
    inputs = []
    for i, (item, checked) in enumerate(zip(msg.inputs, head.inputs, strict=True)):
        name, datatype, shape = checked.name, checked.datatype, checked.shape
        if msg.raw_input_contents:
            inputs.append(raw_tensor(name, datatype, shape, msg.raw_input_contents[i]))
        elif datatype == "BYTES":
            inputs.append(Tensor(name, datatype, shape, list(item.contents.bytes_contents)))
        elif datatype == "UINT8":
            contents = np.array(item.contents.uint_contents, dtype=np.int64)
            if contents.size and (contents.min() < 0 or contents.max() > 255):
                raise bad(f"input {name!r}: UINT8 contents must be 0-255")
            inputs.append(Tensor(name, datatype, shape, contents.astype(np.uint8)))
        else:
            inputs.append(raw_tensor(name, datatype, shape, b""))  # refuses the datatype
    return _request(head, inputs)


def encode_grpc(response, request: InferRequest, model: str, version: str, outputs: list[Tensor]):
    """Fill a ModelInferResponse: raw_output_contents only (tritonclient ignores typed contents)."""
    response.model_name, response.model_version, response.id = model, version, request.id
    for tensor in outputs:
        out = response.outputs.add()
        out.name, out.datatype = tensor.name, tensor.datatype
        out.shape.extend(tensor.shape)
        response.raw_output_contents.append(raw_output(tensor))
    return response
