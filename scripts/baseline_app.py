"""The bench's baseline: seed 001's service, run as the plain sync-gunicorn configuration.

    OMP_NUM_THREADS=1 gunicorn -w 2 -k sync -b 127.0.0.1:10087 "scripts.baseline_app:create_app()"

What seed 001 does per request: PIL open, exact 224x224 resize, ToTensor, Normalize, one
eager forward pass, no batching. Our own code, written to behave like the seed, so the bench
compares against what users start from. Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from PIL import Image
from torchvision import models, transforms


def create_app() -> Flask:
    model = models.get_model(os.environ.get("MODEL_ARCH", "resnet18")).eval().requires_grad_(False)
    transform = transforms.Compose(
        [
            transforms.Resize([224, 224]),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    app = Flask(__name__)

    @app.post("/model_predict")
    def model_predict():
        image = Image.open(request.files["image"]).convert("RGB")
        scores = model(transform(image).unsqueeze(0))[0].softmax(0)
        return jsonify({"status": 1, "result": [str(i) for i in scores.topk(5).indices.tolist()]})

    @app.get("/health")
    def health():
        return jsonify({"status": "alive"})

    return app
