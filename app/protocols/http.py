"""Open Inference Protocol over HTTP: /v2 routes in the Flask app, behind nginx on :8999.

Errors on these routes take the protocol's shape, `{"error": "..."}` with a 4xx/5xx status
(plus `X-Request-ID` like every response), not /model_predict's.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app.errors import APIError, request_id
from app.metrics import IN_FLIGHT
from app.protocols.codec import encode_http, parse_http
from app.protocols.oip import OIP
from app.service import RequestStats

logger = logging.getLogger(__name__)
bp = Blueprint("oip", __name__, url_prefix="/v2")
MODEL = "/models/<name>"
VERSIONED = "/models/<name>/versions/<version>"


def oip() -> OIP:
    return current_app.extensions["oip"]


@bp.get("")
def server_metadata():
    return jsonify(oip().server_metadata())


@bp.get("/health/live")
def live():
    return jsonify({"live": True})


@bp.get("/health/ready")
def ready():
    if not oip().clf.ready:
        raise APIError(503, "not_ready", "the model is loading or warming up")
    return jsonify({"ready": True})


@bp.get(MODEL)
@bp.get(VERSIONED)
def model_metadata(name: str, version: str = ""):
    oip().check_model(name, version)
    return jsonify(oip().model_metadata())


@bp.get(MODEL + "/ready")
@bp.get(VERSIONED + "/ready")
def model_ready(name: str, version: str = ""):
    oip().check_model(name, version)
    return ready()


@bp.get(MODEL + "/config")
@bp.get(VERSIONED + "/config")
def model_config(name: str, version: str = ""):
    oip().check_model(name, version)
    return jsonify(oip().model_config())


@bp.post(MODEL + "/infer")
@bp.post(VERSIONED + "/infer")
def infer(name: str, version: str = ""):
    api = oip()
    api.check_model(name, version)
    api.clf.admit()  # shed load before reading the body
    parsed = parse_http(request.get_data(cache=False), request.headers.get("Inference-Header-Content-Length"))
    g.stats = RequestStats()
    with IN_FLIGHT.track_inprogress():
        outputs = api.infer(parsed, g.stats)
    body, header_length = encode_http(parsed, api.name, api.version, outputs)
    if header_length is None:
        return Response(body, mimetype="application/json")
    response = Response(body, mimetype="application/octet-stream")
    response.headers["Inference-Header-Content-Length"] = str(header_length)
    return response


@bp.errorhandler(APIError)
def _api_error(exc: APIError):
    response = jsonify({"error": exc.message})
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _api_error(APIError(exc.code or 500, "http_error", exc.description or exc.name))


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    logger.exception("unhandled error in request %s", request_id())
    return _api_error(APIError(500, "internal_error", f"internal server error; request id {request_id()}"))


def init_app(app: Flask, api: OIP) -> None:
    app.extensions["oip"] = api
    app.register_blueprint(bp)
