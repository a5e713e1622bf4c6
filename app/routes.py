"""HTTP routes: /model_predict, /health, /ready, /openapi.json and the try-it page at /."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from app.errors import error_response, request_id
from app.metrics import IN_FLIGHT, update_memory
from app.openapi import build_spec
from app.service import Classifier, RequestStats
from app.uploads import read_images

bp = Blueprint("classify", __name__)
UNTRAINED_WARNING = "MODEL_WEIGHTS=random: this model is untrained and its answers are meaningless"
_in_flight: dict[str, float] = {}  # request id -> start time, for gunicorn's worker_abort log


def in_flight() -> str:
    now = time.monotonic()
    return ", ".join(f"{rid} ({now - t0:.1f}s)" for rid, t0 in list(_in_flight.items()))


def classifier() -> Classifier:
    return current_app.extensions["classifier"]


@bp.post("/model_predict")
def model_predict():
    clf = classifier()
    clf.admit()  # shed load before parsing the upload
    blobs, many = read_images(request, clf.cfg.max_images_per_request)
    rid = request_id()
    _in_flight[rid] = time.monotonic()
    g.stats = RequestStats()
    try:
        with IN_FLIGHT.track_inprogress():
            results = clf.classify(blobs, g.stats)
    finally:
        _in_flight.pop(rid, None)
        update_memory(clf.engine.device)
    body = {"status": 1, "results": results} if many else dict(results[0])  # a copy: the cache keeps results
    body.update(model=clf.info, request_id=rid, cache=g.stats.cache)
    if clf.info["untrained"]:
        body["warning"] = UNTRAINED_WARNING
    response = jsonify(body)
    response.headers["X-Cache"] = g.stats.cache  # hit | miss | bypass (README, "Caching")
    return response


@bp.get("/health")
def health():
    return jsonify({"status": "alive"})


@bp.get("/ready")
def ready():
    clf = classifier()
    if not clf.ready:
        return error_response(503, "not_ready", "the model is loading or warming up")
    return jsonify({"status": "ready", "model": clf.info})


@bp.get("/openapi.json")
def openapi():
    return jsonify(build_spec(classifier().cfg))


PAGE = (Path(__file__).parent / "static" / "index.html").read_bytes()  # read once: it never changes


@bp.get("/")
def index():
    return Response(PAGE, mimetype="text/html")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
