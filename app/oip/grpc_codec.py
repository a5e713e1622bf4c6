"""The OIP infer request and response over gRPC: `raw_input_contents` / `raw_output_contents`,
or typed `contents`. The message's fields and parameters go through the same schema as HTTP's.
"""

from __future__ import annotations

import numpy as np

from app.core.errors import invalid
from app.oip.codec import InferRequest, Tensor, from_schema, raw_output, raw_tensor
from app.oip.schema import validate


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
        raise invalid(f"{len(msg.raw_input_contents)} raw_input_contents for {len(msg.inputs)} inputs")
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
                raise invalid(f"input {name!r}: UINT8 contents must be 0-255")
            inputs.append(Tensor(name, datatype, shape, contents.astype(np.uint8)))
        elif datatype == "FP32":
            inputs.append(Tensor(name, datatype, shape, np.array(item.contents.fp32_contents, dtype=np.float32)))
        else:
            inputs.append(raw_tensor(name, datatype, shape, b""))  # refuses the datatype
    return from_schema(head, inputs)


def encode_grpc(response, request: InferRequest, model: str, version: str, outputs: list[Tensor]):
    """Fill a ModelInferResponse: raw_output_contents only (tritonclient ignores typed contents)."""
    response.model_name, response.model_version, response.id = model, version, request.id
    for tensor in outputs:
        out = response.outputs.add()
        out.name, out.datatype = tensor.name, tensor.datatype
        out.shape.extend(tensor.shape)
        response.raw_output_contents.append(raw_output(tensor))
    return response
