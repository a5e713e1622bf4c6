"""Which schema library validates an OIP infer request faster here: pydantic or jsonschema.

    .venv/bin/python -m scripts.bench_schema

app/oip/schema.py uses the winner; this keeps the measurement repeatable. jsonschema is
only needed to run this (pip install jsonschema), not to serve.
"""

from __future__ import annotations

import base64
import timeit

from app.oip.schema import InferenceRequest

REQUEST = {
    "id": "42",
    "inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": [base64.b64encode(b"x" * 60_000).decode()]}
    ],
    "outputs": [{"name": "scores", "parameters": {"classification": 5}}],
}
SCALAR = {"type": ["boolean", "integer", "number", "string"]}
PARAMS = {"type": "object", "additionalProperties": SCALAR}
SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "maxLength": 256},
        "parameters": PARAMS,
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 16,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 256},
                    "shape": {"type": "array", "maxItems": 8, "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "maxLength": 16},
                    "parameters": {**PARAMS, "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {
                        **PARAMS,
                        "properties": {
                            "classification": {"type": "integer", "minimum": 0},
                            "binary_data": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


def main() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)
    n = 20_000
    for name, fn in (
        ("pydantic", lambda: InferenceRequest.model_validate(REQUEST)),
        ("jsonschema", lambda: validator.validate(REQUEST)),
    ):
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        print(f"{name:10s} {best * 1e6:7.1f} us per request")


if __name__ == "__main__":
    main()
