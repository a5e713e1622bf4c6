"""Image-classification service: `create_app()` is the only entry point.

gunicorn -c gunicorn_conf.py "app:create_app()"
"""

from __future__ import annotations

from flask import Flask

from app.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Build the app and load the model (on the CPU, no forward pass).

    The model is started (threads, device, warm-up) here too, unless `defer_start` is set:
    gunicorn_conf.py sets it so that each worker starts its copy after fork.
    """
    from app import errors, routes
    from app.model import load_model
    from app.service import Classifier
    from app.uploads import InMemoryRequest

    cfg = config or Config.from_env()
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes
    app.json.sort_keys = False
    errors.init_app(app)
    routes.init_app(app)
    if cfg.defer_start:
        import torch

        torch.set_num_threads(1)  # a master that forks must not own an OpenMP pool
    classifier = Classifier(cfg, load_model(cfg))
    app.extensions["classifier"] = classifier
    if not cfg.defer_start:
        classifier.start()
    return app
