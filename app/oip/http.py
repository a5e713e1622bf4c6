"""Open Inference Protocol over HTTP: the /v2 routes, behind nginx on :8999.

A thin adapter: app.http.hooks has already started the call and checked the key for each
route's operation; predictions run inside the gate's `serving` context like every door's.
Errors take the protocol's shape, `{"error": "..."}`, through app.http.errors' one table.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from app.core.errors import NotReady
from app.core.guard import Operation
from app.http import errors
from app.http.hooks import gate, operation
from app.oip.dataplane import OIP
from app.oip.http_codec import encode_http, parse_http

bp = Blueprint("oip", __name__, url_prefix="/v2")
MODEL = "/models/<name>"
VERSIONED = "/models/<name>/versions/<version>"
errors.register(bp, errors.oip_shape)  # once: a blueprint takes no handlers after its first app


def oip() -> OIP:
    return current_app.extensions["oip"]


@bp.get("")
@operation(Operation.DESCRIBE)
def server_metadata():
    return jsonify(oip().server_metadata())


@bp.get("/health/live")
@operation(Operation.PROBE)
def live():
    return jsonify({"live": True})


@bp.get("/health/ready")
@operation(Operation.PROBE)
def ready():
    if not oip().clf.ready:
        raise NotReady()
    return jsonify({"ready": True})


@bp.get(MODEL)
@bp.get(VERSIONED)
@operation(Operation.DESCRIBE)
def model_metadata(name: str, version: str = ""):
    return jsonify(oip().model(name, version).metadata())


@bp.get(MODEL + "/ready")
@bp.get(VERSIONED + "/ready")
@operation(Operation.PROBE)
def model_ready(name: str, version: str = ""):
    oip().model(name, version)
    return ready()


@bp.get(MODEL + "/config")
@bp.get(VERSIONED + "/config")
@operation(Operation.DESCRIBE)
def model_config(name: str, version: str = ""):
    return jsonify(oip().model(name, version).config())


@bp.post(MODEL + "/infer")
@bp.post(VERSIONED + "/infer")
@operation(Operation.PREDICT)
def infer(name: str, version: str = ""):
    model = oip().model(name, version)
    with gate().serving(g.call) as stats:  # admitted (or refused) before the body is read
        parsed = parse_http(request.get_data(cache=False), request.headers.get("Inference-Header-Content-Length"))
        outputs = model.infer(parsed, stats)
    body, header_length = encode_http(parsed, model.name, model.version, outputs)
    if header_length is None:
        return Response(body, mimetype="application/json")
    response = Response(body, mimetype="application/octet-stream")
    response.headers["Inference-Header-Content-Length"] = str(header_length)
    return response


def init_app(app: Flask, api: OIP) -> None:
    app.extensions["oip"] = api
    app.register_blueprint(bp)
