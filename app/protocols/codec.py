"""Open Inference Protocol wire codecs, shared by the HTTP and gRPC front doors.

Both transports turn their message into one `InferRequest` and an `InferResponse` back into
their message; what the request means is decided once, in `app.protocols.oip`.

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
import struct
from dataclasses import dataclass, field

import numpy as np

from app.errors import APIError


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


def bad(message: str) -> APIError:
    return APIError(400, "invalid_request", message)


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


def _param(params: object, key: str, default=None):
    return params.get(key, default) if isinstance(params, dict) else default


def _json_input(item: dict, binary: memoryview, at: int) -> tuple[Tensor, int]:
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise bad("each input needs 'name', 'datatype' and 'shape'")
    size = _param(item.get("parameters"), "binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or at + size > len(binary):
            raise bad(f"input {name!r}: binary_data_size {size} overruns the {len(binary) - at} binary bytes left")
        return raw_tensor(name, datatype, shape, bytes(binary[at : at + size])), at + size
    data = item.get("data")
    if not isinstance(data, list):
        raise bad(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    flat = list(np.ravel(np.array(data, dtype=object))) if data else []
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


def parse_http(body: bytes, header_length: str | None) -> InferRequest:
    """An HTTP infer body, JSON or with the binary tensor extension."""
    try:
        split = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise bad("Inference-Header-Content-Length is not a number") from None
    if not 0 <= split <= len(body):
        raise bad(f"Inference-Header-Content-Length {split} exceeds the body ({len(body)} bytes)")
    try:
        head = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"the inference header is not JSON: {exc}") from None
    if not isinstance(head, dict) or not isinstance(head.get("inputs"), list):
        raise bad("the inference request needs an 'inputs' list")
    binary, at, inputs = memoryview(body)[split:], 0, []
    for item in head["inputs"]:
        if not isinstance(item, dict):
            raise bad("each input must be an object")
        tensor, at = _json_input(item, binary, at)
        inputs.append(tensor)
    outputs = []
    for item in head.get("outputs") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise bad("each requested output needs a 'name'")
        params = item.get("parameters")
        outputs.append(Requested(item["name"], _param(params, "classification", 0), _param(params, "binary_data")))
    binary_output = bool(_param(head.get("parameters"), "binary_data_output", False))
    return InferRequest(str(head.get("id", "")), inputs, outputs, binary_output)


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


def _grpc_param(params, key: str, default=None):
    if key not in params:
        return default
    value = params[key]
    return getattr(value, value.WhichOneof("parameter_choice") or "bool_param")


def parse_grpc(msg) -> InferRequest:
    """A ModelInferRequest: raw_input_contents (one per input, in order) or typed contents."""
    if msg.raw_input_contents and len(msg.raw_input_contents) != len(msg.inputs):
        raise bad(f"{len(msg.raw_input_contents)} raw_input_contents for {len(msg.inputs)} inputs")
    inputs = []
    for i, item in enumerate(msg.inputs):
        shape = list(item.shape)
        if msg.raw_input_contents:
            inputs.append(raw_tensor(item.name, item.datatype, shape, msg.raw_input_contents[i]))
        elif item.datatype == "BYTES":
            inputs.append(Tensor(item.name, item.datatype, shape, list(item.contents.bytes_contents)))
        elif item.datatype == "UINT8":
            contents = np.array(item.contents.uint_contents, dtype=np.int64)
            if contents.size and (contents.min() < 0 or contents.max() > 255):
                raise bad(f"input {item.name!r}: UINT8 contents must be 0-255")
            inputs.append(Tensor(item.name, item.datatype, shape, contents.astype(np.uint8)))
        else:
            inputs.append(raw_tensor(item.name, item.datatype, shape, b""))  # refuses the datatype
    outputs = [Requested(o.name, int(_grpc_param(o.parameters, "classification", 0))) for o in msg.outputs]
    return InferRequest(msg.id, inputs, outputs)


def encode_grpc(response, request: InferRequest, model: str, version: str, outputs: list[Tensor]):
    """Fill a ModelInferResponse: raw_output_contents only (tritonclient ignores typed contents)."""
    response.model_name, response.model_version, response.id = model, version, request.id
    for tensor in outputs:
        out = response.outputs.add()
        out.name, out.datatype = tensor.name, tensor.datatype
        out.shape.extend(tensor.shape)
        response.raw_output_contents.append(raw_output(tensor))
    return response
