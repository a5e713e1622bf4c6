"""The /v2 routes (Open Inference Protocol over HTTP) in the OpenAPI spec, beside the seed API.

The binary tensor extension (a JSON header, then raw tensor bytes) is one body with two
parts, which OpenAPI can only name: it is documented as application/octet-stream with the
Inference-Header-Content-Length header.
"""

from __future__ import annotations

from app.config import Config

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "description": "the protocol's error shape",
}
_TENSOR_META = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_PARAMS = {"type": "object", "additionalProperties": True}
_INPUT = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        **_TENSOR_META["properties"],
        "parameters": _PARAMS,
        "data": {
            "type": "array",
            "description": "BYTES: base64-encoded image files; UINT8: the bytes of one file",
            "items": {},
        },
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMS,
        "inputs": {"type": "array", "items": _INPUT},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _PARAMS},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                **_TENSOR_META,
                "properties": {**_TENSOR_META["properties"], "data": {"type": "array"}, "parameters": _PARAMS},
            },
        },
    },
}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    return {str(code): _json("refused", _ERROR) for code in codes}


def _get(summary: str, schema: dict, *errors: int, name: bool = True) -> dict:
    operation = {"summary": summary, "responses": {"200": _json("ok", schema), **_errors(*errors)}}
    if name:
        operation["parameters"] = [_NAME]
    return {"get": operation}


def oip_paths(cfg: Config) -> dict:
    obj = {"type": "object"}
    infer = {
        "summary": "Classify encoded images (BYTES [-1, 1]) or one file (UINT8 [-1]); "
        "outputs 'scores' FP32 [-1, C], or with parameters.classification = k, BYTES 'score:index:label'",
        "parameters": [_NAME],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _INFER_REQUEST},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "binary tensor extension: Inference-Header-Content-Length bytes of JSON, "
                    "then each input's binary_data_size bytes (BYTES elements: 4-byte LE length + data)",
                },
            },
        },
        "responses": {
            "200": {
                "description": "outputs, as JSON or (binary_data) a JSON header followed by raw tensors",
                "content": {
                    "application/json": {"schema": _INFER_RESPONSE},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **_errors(400, 401, 404, 413, 503, 504, 500),
        },
    }
    if cfg.api_key:
        infer["security"] = [{"bearer": []}, {"apiKey": []}]
    return {
        "/v2": _get("Server metadata (extensions: binary_tensor_data, classification)", obj, name=False),
        "/v2/health/live": _get("Liveness", obj, name=False),
        "/v2/health/ready": _get("Readiness: the model is loaded and warm", obj, 503, name=False),
        "/v2/models/{name}": _get("Model metadata", obj, 404),
        "/v2/models/{name}/ready": _get("Model readiness", obj, 404, 503),
        "/v2/models/{name}/config": _get("Triton's model configuration (max_batch_size, dims)", obj, 404),
        "/v2/models/{name}/infer": {"post": infer},
    }
