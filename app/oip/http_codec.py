"""The OIP infer request and response over HTTP: a JSON body, or the binary tensor extension
(`Inference-Header-Content-Length`: that many bytes of JSON, then each binary input's bytes in
order, sized by `binary_data_size`). BYTES elements in JSON are base64 for inputs (a JPEG is
not text) and UTF-8 text for outputs (the classification strings).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator

import numpy as np

from app.core.errors import invalid
from app.core.safejson import load_json
from app.oip.codec import DATATYPES, InferRequest, Tensor, from_schema, raw_output, raw_tensor
from app.oip.schema import RequestInput, validate


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
            raise invalid(f"input {name!r}: binary_data_size {size} overruns the {len(binary) - at} binary bytes left")
        return raw_tensor(name, datatype, shape, bytes(binary[at : at + size])), at + size
    if item.data is None:
        raise invalid(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    flat = list(_leaves(item.data))
    if datatype == "BYTES":
        try:
            return Tensor(name, datatype, shape, [base64.b64decode(x, validate=True) for x in flat]), at
        except (binascii.Error, ValueError, TypeError):
            raise invalid(f"input {name!r}: BYTES elements in JSON must be base64 strings") from None
    if datatype == "UINT8":
        values = [x for x in flat if isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255]
        if len(values) != len(flat):
            raise invalid(f"input {name!r}: UINT8 data must be integers 0-255")
        return Tensor(name, datatype, shape, np.array(values, dtype=np.uint8)), at
    if datatype == "FP32":
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat):
            raise invalid(f"input {name!r}: FP32 data must be numbers")
        with np.errstate(over="ignore"):  # 1e39 becomes inf, which the model refuses by name
            data = np.array([float(x) for x in flat], dtype=np.float64).astype(np.float32)
        return Tensor(name, datatype, shape, data), at
    raise invalid(f"input {name!r} has datatype {datatype}; send {DATATYPES}")


def parse_http(body: bytes, header_length: str | None) -> InferRequest:
    """An HTTP infer body, JSON or with the binary tensor extension."""
    if header_length is None:
        split = len(body)
    elif re.fullmatch(r"[0-9]{1,10}", header_length):  # not isdigit(): "²" is a digit to it, not to int()
        split = int(header_length)
    else:
        raise invalid("Inference-Header-Content-Length is not a byte count")
    if split > len(body):
        raise invalid(f"Inference-Header-Content-Length {split} exceeds the body ({len(body)} bytes)")
    head = validate(load_json(body[:split], "invalid_request", "the inference header"))
    binary, at, inputs = memoryview(body)[split:], 0, []
    for item in head.inputs:
        tensor, at = _json_input(item, binary, at)
        inputs.append(tensor)
    return from_schema(head, inputs)


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
