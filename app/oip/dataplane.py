"""What an Open Inference Protocol request means for this model, whichever transport brought it.

The model's version is its weights' (`app.model.weights`: a checkpoint's sha256, 12 hex digits).
One input, `image`: BYTES `[-1, 1]` (or `[-1]`), each element an encoded JPEG/PNG/WebP file,
decoded by the same decode stage as /model_predict; or UINT8 `[-1]` holding one file (the
DALI-style form). One output, `scores`: FP32 `[-1, C]` after the configured activation, or,
with the classification extension (`classification: k`), BYTES `[-1, k]` of "score:index:label",
best first. Inference runs through `Classifier.scores`: the same batcher, queue bound and
deadline as /model_predict, so every protocol shares one pool of model workers.
"""

from __future__ import annotations

import math

import numpy as np

from app.core.errors import NotFound, TooLarge, invalid
from app.core.postprocess import activate, top_k
from app.core.service import Classifier, RequestStats
from app.oip.codec import InferRequest, Tensor

INPUT, OUTPUT = "image", "scores"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration"]


class OIP:
    def __init__(self, clf: Classifier):
        self.clf, self.name = clf, clf.cfg.model_name
        self.classes = len(clf.model.labels)
        self.version = clf.info["version"]  # the weights' version: a HUP reload brings a new one

    def check_model(self, name: str, version: str = "") -> None:
        if name != self.name:
            raise NotFound("unknown_model", f"unknown model {name!r}; this server serves {self.name!r}")
        if version not in ("", self.version):
            raise NotFound("unknown_version", f"model {name!r} has no version {version!r}; it has {self.version!r}")

    def server_metadata(self) -> dict:
        return {"name": "classifier", "version": "1", "extensions": EXTENSIONS}

    def model_metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "pytorch",
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1, 1]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, self.classes]}],
        }

    def model_config(self) -> dict:
        """Triton's model-configuration extension (its JSON form); perf_analyzer requires it."""
        cfg = self.clf.cfg
        return {
            "name": self.name,
            "platform": "pytorch",
            "backend": "pytorch",
            "max_batch_size": cfg.max_images_per_request,
            "input": [{"name": INPUT, "data_type": "TYPE_STRING", "dims": [1]}],
            "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [self.classes]}],
            "dynamic_batching": {
                "preferred_batch_size": [cfg.max_batch_size],
                "max_queue_delay_microseconds": int(cfg.max_batch_delay_ms * 1000),
            },
        }

    def images(self, request: InferRequest) -> list[bytes]:
        if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
            got = ", ".join(repr(t.name) for t in request.inputs) or "none"
            raise invalid(f"this model takes one input, {INPUT!r} (BYTES [-1, 1] encoded images); got {got}")
        tensor = request.inputs[0]
        shape, count = tensor.shape, len(tensor.data)
        if tensor.datatype == "UINT8":
            if not (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)) or math.prod(shape) != count:
                raise invalid(f"a UINT8 {INPUT!r} holds one file: shape [{count}], got {shape}")
            blobs = [tensor.data.tobytes()]
        else:
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] != count:
                raise invalid(f"{INPUT!r} has shape {shape} but {count} elements; send shape [{count}, 1]")
            blobs = list(tensor.data)
        limit = self.clf.cfg.max_images_per_request
        if not blobs:
            raise invalid(f"a request holds 1 to {limit} images (max_batch_size); got none")
        if len(blobs) > limit:
            raise TooLarge("too_many_images", f"a request holds 1 to {limit} images (max_batch_size); got {len(blobs)}")
        return blobs

    def infer(self, request: InferRequest, stats: RequestStats) -> list[Tensor]:
        blobs = self.images(request)
        wanted = request.outputs or []
        for out in wanted:
            if out.name != OUTPUT:
                raise invalid(f"unknown output {out.name!r}; this model has {OUTPUT!r}")
        logits = self.clf.logits(blobs, stats)
        rows = [activate(row, self.clf.cfg.activation_fn) for row in logits]
        outputs = []
        for out in wanted or [None]:
            k = min(out.classification, self.classes) if out is not None else 0
            if k:
                labels = self.clf.model.labels
                picks = [
                    [f"{row[i]:f}:{i}:{labels[i]}".encode() for i in top_k(raw, k)]
                    for row, raw in zip(rows, logits, strict=True)
                ]
                outputs.append(Tensor(OUTPUT, "BYTES", [len(rows), k], [s for pick in picks for s in pick]))
            else:
                outputs.append(Tensor(OUTPUT, "FP32", [len(rows), self.classes], np.stack(rows).astype(np.float32)))
        return outputs
