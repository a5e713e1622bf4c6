"""Prometheus metrics at GET /metrics, summed over every gunicorn worker.

prometheus_client's multiprocess mode: each worker writes its samples to files under
PROMETHEUS_MULTIPROC_DIR (gunicorn_conf.py makes one directory per server), and /metrics
adds them up. Without that variable (tests, a single process) the process's own registry is
served.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REQUESTS = Counter("classifier_requests", "Prediction requests answered, by HTTP status", ["status"])
LATENCY = Histogram(
    "classifier_request_seconds",
    "Time to answer a prediction request",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram("classifier_batch_size", "Images per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64))
IMAGES = Counter("classifier_images", "Images classified")


def observe_batch(size: int) -> None:
    BATCH_SIZE.observe(size)
    IMAGES.inc(size)


def _start_timer() -> None:
    g.started = time.perf_counter()


def _record(response: Response) -> Response:
    if request.endpoint == "classify.model_predict":
        REQUESTS.labels(str(response.status_code)).inc()
        LATENCY.observe(time.perf_counter() - g.get("started", time.perf_counter()))
    return response


def metrics() -> Response:
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_record)
    app.add_url_rule("/metrics", "metrics", metrics)
