"""TorchServe's wire forms, with no web framework in them: the answer, the error table, the
model descriptions of its management API.

The answer is that of TorchServe's image classifier: one JSON object, label -> probability,
best first; the top TOP_K for a multiclass model, every label above THRESHOLD for a
multilabel one. Errors are `{"code": <status>, "type": <TorchServe's exception name>,
"message": ...}`.
"""

from __future__ import annotations

import math
import re

from app.config import Config
from app.core.errors import Kind, NotFound, ServiceError, invalid

# The core's kinds -> (status, TorchServe's exception type): the one table of this door.
# TorchServe answers a handler that fails on a corrupt image or a bomb with a bare 503
# InternalServerException "Prediction failed", which tells a client nothing and invites a
# retry; here they are 400 and 413, as on every other door of this server.
ERRORS: dict[Kind, tuple[int, str]] = {
    Kind.INVALID: (400, "BadRequestException"),
    Kind.UNSUPPORTED: (400, "BadRequestException"),  # TorchServe has no 415: it takes any body as input
    # TorchServe's own 413 (netty's, over max_request_size) has no body, so no name to reuse.
    Kind.TOO_LARGE: (413, "RequestEntityTooLargeException"),
    # TorchServe's name for a token refusal, which it answers with 400; 401 here, as on every
    # door, so that clients and proxies see an authentication failure for what it is.
    Kind.UNAUTHENTICATED: (401, "InvalidKeyException"),
    Kind.NOT_FOUND: (404, "ModelNotFoundException"),
    Kind.OVERLOADED: (503, "ServiceUnavailableException"),
    # TorchServe's timeout type (its own status is 408, "the client was slow", which this is not).
    Kind.DEADLINE: (504, "RequestTimeoutException"),
    Kind.NOT_READY: (503, "ServiceUnavailableException"),
    Kind.INTERNAL: (500, "InternalServerException"),
}
UNKNOWN_VERSION = "unknown_version"  # a NOT_FOUND that TorchServe names apart
VERSION_NOT_FOUND = "ModelVersionNotFoundException"

# What werkzeug refuses before a view runs (routing, framing, MAX_CONTENT_LENGTH), by status.
HTTP_TYPES = {
    400: "BadRequestException",
    404: "ResourceNotFoundException",
    405: "MethodNotAllowedException",
    413: ERRORS[Kind.TOO_LARGE][1],
}
HTTP_MESSAGES = {
    404: "no such resource in TorchServe's API as served here (docs/protocols.md, 'TorchServe')",
    405: "this method is not allowed here; predictions take POST or PUT, the management reads GET "
    "(one model, fixed at start: registering, scaling and unregistering are not served)",
}


def error_body(status: int, kind: str, message: str) -> dict:
    return {"code": status, "type": kind, "message": message}


def refusal(exc: ServiceError) -> tuple[int, str]:
    """(status, type) of a domain error."""
    status, kind = ERRORS[exc.kind]
    return status, (VERSION_NOT_FOUND if exc.code == UNKNOWN_VERSION else kind)


def http_refusal(status: int, description: str) -> tuple[str, str]:
    """(type, message) of one of werkzeug's own refusals."""
    kind = HTTP_TYPES.get(status, "InternalServerException" if status >= 500 else "BadRequestException")
    return kind, HTTP_MESSAGES.get(status, description)


def check_model(name: str, version: str, served: str, served_version: str, all_ok: bool = False) -> None:
    """Refuse a model or version this server doesn't serve; `all_ok`: TorchServe's "all"
    (every version, in a description) is one too."""
    if name != served:
        raise NotFound("unknown_model", f"Model not found: {name[:200]!r}; this server serves {served!r}")
    if version not in ("", served_version) and not (all_ok and version == "all"):
        raise NotFound(UNKNOWN_VERSION, f"model {name!r} has no version {version[:200]!r}; it has {served_version!r}")


def prediction(result: dict) -> dict[str, float]:
    """One image's answer (app.core.postprocess.describe) as TorchServe's image classifier
    gives it. A label the labels file repeats keeps its best score: an object holds a key once."""
    answer: dict[str, float] = {}
    for p in result["predictions"]:
        answer.setdefault(p["label"], p["score"])
    return answer


def _count(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", value):  # not isdigit(): "²" is a digit to it, not to int()
        raise invalid(f"{name} must be a whole number, got {value[:40]!r}")
    return int(value)


def model_list(name: str, url: str, limit: str | None, page_token: str | None) -> dict:
    """GET /models, paginated as TorchServe pages it (limit clamped to 100), over one model."""
    size = _count(limit, "limit", 100)
    size = size if 1 <= size <= 100 else 100  # 0 would page forever
    start = _count(page_token, "next_page_token", 0)
    models = [{"modelName": name, "modelUrl": url}]
    body: dict = {"models": models[start : start + size]}
    if start + size < len(models):
        body["nextPageToken"] = str(start + size)
    return body


def description(name: str, info: dict, cfg: Config, workers: list[dict]) -> list[dict]:
    """GET /models/{model}: TorchServe's DescribeModelResponse, with what is true here."""
    return [
        {
            "modelName": name,
            "modelVersion": info["version"],  # the weights' own (app.model.weights)
            "modelUrl": info["weights"],  # where the weights came from, as a .mar's name does
            "runtime": "python",  # constant: no other backend exists here
            # gunicorn's workers hold one copy of the model each, like TorchServe's; their
            # number is fixed at start (WORKERS), so min = max = those serving these weights.
            "minWorkers": len(workers),
            "maxWorkers": len(workers),
            "batchSize": cfg.max_batch_size,  # the dynamic batcher's limit, per worker
            "maxBatchDelay": round(cfg.max_batch_delay_ms),
            "responseTimeout": math.ceil(cfg.request_timeout_s),
            "loadedAtStartup": True,  # constant: the one model is loaded before the server listens
            "workers": workers,
            "customizedMetadata": dict(info),  # TorchServe's field for what a model tells of itself
        }
    ]
