"""The OpenAPI 3.0 description of the service, served at GET /openapi.json.

Written out by hand as data: Flask has no schema layer to generate it from, and the spec is
the contract clients code against. tests/test_openapi.py runs schemathesis against the live
server, so the spec and the code can't drift apart unnoticed.
"""

from __future__ import annotations

from functools import cache

from app.config import Config
from app.oip.openapi import oip_paths


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, retry_after: bool = False) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return response


_BINARY = {"type": "string", "format": "binary"}
_BASE64 = {"type": "string", "format": "byte", "description": "base64, optionally as a data: URI"}
_REQUEST_ID = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Traces the request through nginx, the app log and the answer; "
    "an id not matching [A-Za-z0-9._:-]{1,128} is replaced with a generated one.",
    "schema": {"type": "string"},
}

_CACHE = {
    "type": "string",
    "enum": ["hit", "miss", "bypass"],
    "description": "hit: every image answered from the result cache; bypass: no cache (REDIS_URL) or it is down",
}
SCHEMAS = {
    "Prediction": {
        "type": "object",
        "required": ["label", "index", "score"],
        "properties": {
            "label": {"type": "string"},
            "index": {"type": "integer", "minimum": 0},
            "score": {"type": "number", "description": "probability, or the raw output with ACTIVATION=none"},
        },
    },
    "ImageResult": {
        "type": "object",
        "required": ["status", "result", "predictions"],
        "properties": {
            "status": {"type": "integer", "enum": [0, 1], "description": "0: nothing above THRESHOLD"},
            "result": {
                "oneOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "string", "enum": ["No Categories"]},
                ],
                "description": "labels, best first (seed 001's shape)",
            },
            "predictions": {"type": "array", "items": _ref("Prediction")},
        },
    },
    "Model": {
        "type": "object",
        "required": ["arch", "weights", "task", "activation", "num_classes", "untrained", "version"],
        "properties": {
            "arch": {"type": "string"},
            "weights": {"type": "string"},
            "version": {
                "type": "string",
                "description": "the weights': a checkpoint's sha256 (12 hex digits), or a torchvision enum and hash",
            },
            "task": {"type": "string", "enum": ["multiclass", "multilabel"]},
            "activation": {"type": "string", "enum": ["softmax", "sigmoid", "none"]},
            "num_classes": {"type": "integer"},
            "untrained": {"type": "boolean"},
        },
    },
    "Answer": {
        "description": "One image (one upload): its result at the top level. Several: `results`, in order.",
        "allOf": [
            {
                "type": "object",
                "required": ["model", "request_id", "cache"],
                "properties": {
                    "model": _ref("Model"),
                    "request_id": {"type": "string"},
                    "cache": _CACHE,
                    "warning": {"type": "string", "description": "set when MODEL_WEIGHTS=random"},
                },
            },
            {
                "oneOf": [
                    _ref("ImageResult"),
                    {
                        "type": "object",
                        "required": ["status", "results"],
                        "properties": {
                            "status": {"type": "integer", "enum": [1]},
                            "results": {"type": "array", "items": _ref("ImageResult")},
                        },
                    },
                ]
            },
        ],
    },
    "Error": {
        "type": "object",
        "required": ["status", "error", "message", "request_id"],
        "properties": {
            "status": {"type": "integer", "enum": [0]},
            "error": {"type": "string", "description": "stable code, e.g. not_an_image, overloaded"},
            "message": {"type": "string", "description": "what is wrong and how to fix it"},
            "request_id": {"type": "string"},
        },
    },
}


def _predict(cfg: Config) -> dict:
    limits = (
        f"Limits: {cfg.max_upload_bytes} bytes per request (MAX_UPLOAD_BYTES), {cfg.max_images_per_request} "
        f"images (MAX_IMAGES_PER_REQUEST), {cfg.max_image_pixels} pixels per image (MAX_IMAGE_PIXELS)."
    )
    image_body = {"schema": _BINARY}
    return {
        "post": {
            "summary": "Classify one or several images",
            "description": "JPEG, PNG, WebP, GIF (first frame), BMP or TIFF. " + limits,
            "operationId": "model_predict",
            "parameters": [_REQUEST_ID],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image"],
                            "properties": {
                                "image": {**_BINARY, "description": "repeat the field to send several images"}
                            },
                        }
                    },
                    "image/jpeg": image_body,
                    "image/png": image_body,
                    "application/octet-stream": image_body,
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"type": "object", "required": ["image"], "properties": {"image": _BASE64}},
                                {
                                    "type": "object",
                                    "required": ["images"],
                                    "properties": {"images": {"type": "array", "minItems": 1, "items": _BASE64}},
                                },
                            ]
                        }
                    },
                },
            },
            "responses": {
                "200": {
                    "description": "Predictions",
                    "headers": {
                        "X-Request-ID": {"schema": {"type": "string"}},
                        "Server-Timing": {"schema": {"type": "string"}, "description": "decode, queue, infer, total"},
                        "X-Cache": {"schema": _CACHE},
                    },
                    "content": {"application/json": {"schema": _ref("Answer")}},
                },
                "400": _error("Not an image, corrupt, empty, or a malformed body"),
                "413": _error("Too many bytes, pixels or images, or an aspect ratio past MAX_ASPECT_RATIO"),
                "415": _error("Unsupported Content-Type"),
                "503": _error("At capacity (MAX_QUEUE) or still loading; retry after Retry-After", retry_after=True),
                "504": _error("No result within REQUEST_TIMEOUT_S"),
                "500": _error("Unexpected; quote request_id when reporting it"),
            },
        }
    }


_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


@cache  # Config is frozen, so one spec per configuration, built on first request
def build_spec(cfg: Config) -> dict:
    text = {"text/plain": {"schema": {"type": "string"}}}
    spec = {
        "openapi": "3.0.3",
        "info": {
            "title": "Image classifier",
            "version": "1.0.0",
            "description": (
                "A PyTorch image classifier (any torchvision or timm architecture) behind nginx and "
                "gunicorn. Every answer carries a request_id."
            ),
        },
        "paths": {
            "/model_predict": _predict(cfg),
            "/health": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "Alive",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"type": "string", "enum": ["alive"]}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness: the model is loaded and warmed up",
                    "operationId": "ready",
                    "responses": {
                        "200": {
                            "description": "Ready",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status", "model"],
                                        "properties": {
                                            "status": {"type": "string", "enum": ["ready"]},
                                            "model": _ref("Model"),
                                        },
                                    }
                                }
                            },
                        },
                        "503": _error("Loading or warming up"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics, summed over the workers",
                    "operationId": "metrics",
                    "responses": {"200": {"description": "Prometheus text format 0.0.4", "content": text}},
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
    spec["paths"].update(oip_paths(cfg))  # the Open Inference Protocol's HTTP routes
    if cfg.api_key:  # API_KEY set: predictions and metrics need it, either way of sending it
        spec["components"]["securitySchemes"] = _SECURITY_SCHEMES
        for path, method in (("/model_predict", "post"), ("/metrics", "get"), ("/v2/models/{name}/infer", "post")):
            operation = spec["paths"][path][method]
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            operation["responses"]["401"] = _error("No valid API key")
    return spec
