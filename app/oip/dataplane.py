"""What an Open Inference Protocol request means, whichever transport brought it.

The repository holds two models over the one classifier (app.oip.models): `<MODEL_NAME>`,
which takes encoded image files, and `<MODEL_NAME>_tensor`, which takes FP32 NCHW pixels. A
model's version is its weights' (`app.model.weights`: a checkpoint's sha256, 12 hex digits).
Inference runs through the classifier's one batcher, queue bound and deadline, shared with
/model_predict, so every protocol and model shares one pool of model workers.
"""

from __future__ import annotations

from app.core.errors import NotFound
from app.core.service import Classifier
from app.oip.models import ImageModel, TensorModel

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration"]


class OIP:
    def __init__(self, clf: Classifier):
        self.clf, self.name = clf, clf.cfg.model_name
        models = (ImageModel(clf, self.name), TensorModel(clf, f"{self.name}_tensor"))
        self.models = {model.name: model for model in models}

    def model(self, name: str, version: str = "") -> ImageModel | TensorModel:
        """The model a request names, or NotFound naming the ones there are."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(
                "unknown_model", f"unknown model {name[:200]!r}; this server serves {', '.join(map(repr, self.models))}"
            )
        if version not in ("", model.version):
            raise NotFound(
                "unknown_version", f"model {name!r} has no version {version[:200]!r}; it has {model.version!r}"
            )
        return model

    def server_metadata(self) -> dict:
        return {"name": "classifier", "version": "1", "extensions": EXTENSIONS}
