"""Image-classification service: `create_app()` is the only entry point.

gunicorn -c gunicorn_conf.py "app:create_app()"
"""

from __future__ import annotations

import logging
import os
import sys
import time

from flask import Flask

from app.config import Config, ConfigError


def _log_through_gunicorn() -> None:
    """Under gunicorn, app logs go to its error log with its format and level."""
    gunicorn = logging.getLogger("gunicorn.error")
    ours = logging.getLogger("app")
    if gunicorn.handlers and not ours.handlers:
        ours.handlers = list(gunicorn.handlers)
        ours.setLevel(gunicorn.level)
        ours.propagate = False


def create_app(config: Config | None = None) -> Flask:
    """Build the app and load the model on the CPU (its only forward passes: the graph trace and
    its check at another batch size, app.model.infer).

    The model is started (threads, device, warm-up) here too, unless `defer_start` is set:
    gunicorn_conf.py sets it so that each worker starts its copy after fork.
    """
    from app.telemetry import requestlog

    _log_through_gunicorn()
    requestlog.setup_logging(logging.getLogger("app").level or logging.INFO)
    if config is not None:
        return _build(config)  # callers that pass a config (tests, a HUP reload) get the exception
    try:
        return _build(Config.from_env())
    except ConfigError as exc:
        if os.environ.get("DEFER_START") != "1":
            raise
        # Under gunicorn (gunicorn_conf.py sets DEFER_START): one line, not a traceback, and
        # gunicorn's own boot-error code, which supervisor.conf treats as final (exitcodes=3).
        print(f"{STARTUP_FAILED}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(BOOT_ERROR) from None


STARTUP_FAILED = "classifier: startup failed"
BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR


def _build(cfg: Config) -> Flask:
    from app.core.guard import Gate
    from app.core.service import Classifier
    from app.http import hooks, routes
    from app.http.uploads import InMemoryRequest
    from app.model.infer import native_precision
    from app.model.loading import load_model
    from app.oip import http as oip_http
    from app.oip.dataplane import OIP
    from app.telemetry import metrics
    from app.torchserve import http as torchserve_http

    cfg = native_precision(cfg)
    app = Flask(__name__, static_folder=None)  # the one page is served by routes.index
    app.request_class = InMemoryRequest
    # No 308 redirect (an HTML body) from "//model_predict" to "/model_predict": unknown
    # paths are 404s in each door's JSON. Set before any route is added.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes
    app.json.sort_keys = False
    if cfg.defer_start:
        import torch

        torch.set_num_threads(1)  # a master that forks must not own an OpenMP pool
    started = time.perf_counter()
    classifier = Classifier(cfg, load_model(cfg))
    metrics.LOAD_SECONDS.set(time.perf_counter() - started)
    app.extensions["classifier"] = classifier
    # The one guarded core every door enters: the HTTP doors through hooks, gRPC through its
    # servicer (app.runtime.hooks starts it in each worker with this gate).
    app.extensions["gate"] = Gate(classifier, cfg.api_key)
    hooks.init_app(app)
    routes.init_app(app)
    oip_http.init_app(app, OIP(classifier))  # the /v2 routes: a second door onto the same model
    torchserve_http.init_app(app)  # /predictions, /ping, /models: TorchServe's API, a third door
    if not cfg.defer_start:
        classifier.start()
    return app
