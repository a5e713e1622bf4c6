"""Open Inference Protocol tensors and framing, shared by the HTTP and gRPC codecs.

Both transports turn their message into one `InferRequest` (app/oip/http_codec.py,
app/oip/grpc_codec.py, after app/oip/schema.py has checked its structure) and a list of
output `Tensor`s back into their message; what the request means is decided once, in
`app.oip.dataplane`. BYTES tensors in binary form: each element is a 4-byte little-endian
length, then the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from app.core.errors import invalid
from app.oip.schema import InferenceRequest


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


def split_bytes(raw: bytes, where: str) -> list[bytes]:
    """BYTES elements from their length-prefixed form; a truncated buffer is a client error."""
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise invalid(f"{where}: truncated BYTES element length at byte {at}")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise invalid(f"{where}: BYTES element of {size} bytes overruns the buffer ({len(raw) - at} left)")
        items.append(raw[at : at + size])
        at += size
    return items


def join_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


DATATYPES = "BYTES (encoded images), UINT8 (one file) or FP32 (pixels, for the _tensor model)"


def raw_tensor(name: str, datatype: str, shape: list[int], raw: bytes) -> Tensor:
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, split_bytes(raw, f"input {name!r}"))
    if datatype == "UINT8":
        return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=np.uint8))
    if datatype == "FP32":
        if len(raw) % 4:
            raise invalid(f"input {name!r}: {len(raw)} bytes is not a whole number of FP32 elements")
        return Tensor(name, datatype, shape, np.frombuffer(raw, dtype="<f4"))
    raise invalid(f"input {name!r} has datatype {datatype}; send {DATATYPES}")


def raw_output(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return join_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data, dtype="<f4").tobytes()


def from_schema(head: InferenceRequest, inputs: list[Tensor]) -> InferRequest:
    outputs = [Requested(o.name, o.parameters.classification, o.parameters.binary_data) for o in head.outputs]
    return InferRequest(head.id, inputs, outputs, head.parameters.binary_data_output)
