"""TorchServe's inference API over HTTP, behind nginx on :8999: a thin adapter.

app.http.hooks has already started the call and checked the key for each route's operation;
a prediction runs inside the gate's `serving` context and through `Classifier.classify`, the
same decode, batcher, cache and engine as /model_predict. Errors take TorchServe's shape from
app.torchserve.codec's one table, on this blueprint's routes and, through app.http.errors'
`claim`, on every unrouted path under /predictions, /models and /ping.
"""

from __future__ import annotations

import logging
import os

from flask import Blueprint, Flask, Request, Response, current_app, g, jsonify, request
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from app.core.errors import Kind, ServiceError, invalid
from app.core.guard import Operation
from app.core.service import Classifier
from app.http import errors
from app.http.hooks import gate, operation
from app.telemetry.metrics import PREFIX, exposition
from app.torchserve import codec

logger = logging.getLogger(__name__)
bp = Blueprint("torchserve", __name__)
SEGMENTS = ("predictions", "models", "ping")  # the paths this door owns, also in nginx.conf's map
FIELDS = ("data", "body")  # the form fields TorchServe's handlers take a file from


def classifier() -> Classifier:
    return current_app.extensions["classifier"]


def read_image(req: Request) -> bytes:
    """The one image: the body itself, whatever its Content-Type (curl -T sends none), or the
    one file of a form in a part 'data' or 'body'."""
    if req.mimetype != "multipart/form-data":
        return req.get_data(cache=False)
    files = [f for name in FIELDS for f in req.files.getlist(name)]
    if len(files) == 1:
        return files[0].read()
    how = "send one image per request: curl -F data=@kitten.jpg, or the image as the body (curl -T kitten.jpg)"
    if files:
        raise invalid(f"{len(files)} files in the form; {how}")
    texts = [name for name in FIELDS if name in req.form]
    if texts:
        raise invalid(f"the part {texts[0]!r} is a text field, not a file; {how}")
    got = ", ".join(sorted({name for name in (*req.files, *req.form) if name}))[:200]  # the client's names
    raise invalid(f"no file part 'data' or 'body' in the form (got: {got or 'none'}); {how}")


@bp.route("/predictions/<model>", methods=["POST", "PUT"])
@bp.route("/predictions/<model>/<version>", methods=["POST", "PUT"])
@operation(Operation.PREDICT)
def predictions(model: str, version: str = ""):
    clf = classifier()
    codec.check_model(model, version, clf.cfg.model_name, clf.info["version"])
    with gate().serving(g.call) as stats:  # admitted (or refused) before the body is read
        (result,) = clf.classify([read_image(request)], stats)  # one file per request, as TorchServe
    response = jsonify(codec.prediction(result))
    response.headers["X-Cache"] = stats.cache
    return response


@bp.get("/ping")
@operation(Operation.PROBE)
def ping():
    if classifier().ready:
        return jsonify({"status": "Healthy"})
    return jsonify({"status": "Unhealthy"}), 500  # TorchServe's answer while its workers aren't up


@bp.get("/models")
@operation(Operation.DESCRIBE)  # the model's name and where its weights came from: what /ready tells
def models():
    clf, args = classifier(), request.args
    body = codec.model_list(clf.cfg.model_name, clf.info["weights"], args.get("limit"), args.get("next_page_token"))
    return jsonify(body)


# Behind the key, as /metrics is: it tells each worker's pid and memory, which /metrics tells.
# TorchServe too keeps its management API behind a key of its own when tokens are on.
@bp.get("/models/<model>")
@bp.get("/models/<model>/<version>")
@operation(Operation.METRICS)
def describe(model: str, version: str = ""):
    clf = classifier()
    codec.check_model(model, version, clf.cfg.model_name, clf.info["version"], all_ok=True)
    return jsonify(codec.description(clf.cfg.model_name, clf.info, clf.cfg, workers(clf)))


def workers(clf: Classifier) -> list[dict]:
    """Every worker serving these weights now, read from the metrics all workers share
    (app.telemetry: model_info is 1 per live worker, by pid; memory is each one's last reading)."""
    device = clf.engine.device if clf.engine is not None else None
    serving, memory = set(), {}
    for family in text_string_to_metric_families(exposition(device).decode()):
        for sample in family.samples:
            pid = int(sample.labels.get("pid", os.getpid()))  # no pid label: one process, this one
            if sample.name == PREFIX + "model_info" and sample.labels["version"] == clf.info["version"]:
                serving.add(pid)
            elif sample.name == PREFIX + "process_resident_memory_bytes":
                memory[pid] = int(sample.value)
    gpu = device is not None and device.type == "cuda"  # every worker runs on the same kind of DEVICE
    return [
        {"id": str(pid), "status": "READY", "memoryUsage": memory.get(pid, 0), "pid": pid, "gpu": gpu}
        for pid in sorted(serving)
    ]


# --- errors, in TorchServe's shape ----------------------------------------------------------


def _refusal(status: int, kind: str, message: str, headers: dict | None = None) -> Response:
    response = jsonify(codec.error_body(status, kind, message))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _service_error(exc: ServiceError) -> Response:
    status, kind = codec.refusal(exc)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    if exc.kind is Kind.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="classifier"'
    return _refusal(status, kind, exc.message, headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = _refusal(status, *codec.http_refusal(status, exc.description or exc.name))
    if status == 405 and getattr(exc, "valid_methods", None):
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error in request %s", errors.current_id())
    return _refusal(500, "InternalServerException", f"internal server error; request id {errors.current_id()}")


# app.http.errors names werkzeug's refusals "not_found", "method_not_allowed", ...: back to statuses.
_STATUS_OF = {name.lower().replace(" ", "_"): status for status, name in HTTP_STATUS_CODES.items()}


def unrouted_shape(code: str, message: str, rid: str) -> dict:
    """A 404/405 that matched none of this door's routes (app.http.errors.by_path)."""
    status = _STATUS_OF.get(code, 500)  # "internal_error": the app-wide handler's generic 500
    return codec.error_body(status, *codec.http_refusal(status, message))


bp.register_error_handler(ServiceError, _service_error)  # once: a blueprint takes no handlers after its first app
bp.register_error_handler(HTTPException, _http_error)
bp.register_error_handler(Exception, _unexpected)


def init_app(app: Flask) -> None:
    errors.claim(SEGMENTS, unrouted_shape)
    app.register_blueprint(bp)
