"""The seed API's door: /model_predict, /health, /ready, /metrics, /openapi.json and the page at /.

A thin codec: it reads images out of the request (app.http.uploads), runs them through the
core inside the gate's `serving` context, and writes the seed's JSON.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.core.errors import NotReady
from app.core.guard import Operation
from app.core.service import Classifier
from app.http import errors
from app.http.hooks import gate, operation
from app.http.openapi import build_spec
from app.http.uploads import read_images
from app.telemetry.metrics import exposition

bp = Blueprint("classify", __name__)
UNTRAINED_WARNING = "MODEL_WEIGHTS=random: this model is untrained and its answers are meaningless"


def classifier() -> Classifier:
    return current_app.extensions["classifier"]


@bp.post("/model_predict")
@operation(Operation.PREDICT)
def model_predict():
    clf = classifier()
    with gate().serving(g.call) as stats:  # admitted (or refused) before the upload is read
        blobs, many = read_images(request, clf.cfg.max_images_per_request)
        results = clf.classify(blobs, stats)
    body = {"status": 1, "results": results} if many else dict(results[0])  # a copy: the cache keeps results
    body.update(model=clf.info, request_id=g.call.request_id, cache=stats.cache)
    if clf.info["untrained"]:
        body["warning"] = UNTRAINED_WARNING
    response = jsonify(body)
    response.headers["X-Cache"] = stats.cache  # hit | miss | bypass (docs/caching.md, "Caching")
    return response


@bp.get("/health")
@operation(Operation.PROBE)
def health():
    return jsonify({"status": "alive"})


@bp.get("/ready")
@operation(Operation.PROBE)
def ready():
    clf = classifier()
    if not clf.ready:
        raise NotReady()
    return jsonify({"status": "ready", "model": clf.info})


@bp.get("/metrics")
@operation(Operation.METRICS)
def metrics():
    engine = classifier().engine
    return Response(exposition(engine.device if engine is not None else None), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
@operation(Operation.DESCRIBE)
def openapi():
    return jsonify(build_spec(classifier().cfg))


PAGE = (Path(__file__).parent / "static" / "index.html").read_bytes()  # read once: it never changes


@bp.get("/")
@operation(Operation.DESCRIBE)
def index():
    return Response(PAGE, mimetype="text/html")


def init_app(app: Flask) -> None:
    errors.register(app, errors.by_path)  # the app-wide default; the OIP blueprint has its own
    app.register_blueprint(bp)
