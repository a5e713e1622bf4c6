"""The models the OIP repository serves, one classifier behind both:

- `<MODEL_NAME>` (ImageModel): encoded image files, decoded and resized by the server, as
  /model_predict takes them. Input `image`: BYTES `[-1, 1]` (or `[-1]`), or UINT8 `[-1]`
  holding one file (the DALI-style form).
- `<MODEL_NAME>_tensor` (TensorModel): pixels the client decoded and resized itself, FP32
  `[-1, 3, H, W]` in 0-255 RGB, `FORMAT_NCHW` in its config, H and W the network's input.
  This is what Triton's image_client.py and client-side pipelines (DALI, their own code) send;
  the server's normalisation (the architecture's mean/std) is applied to it, so
  `image_client.py --scaling NONE` matches. Pixels are rounded to 8 bits, as a decoded image's
  are, and share the batcher and engine with every other door.

Both answer `scores`: FP32 `[-1, C]` after the configured activation, or, with the
classification extension (`classification: k`), BYTES `[-1, k]` of "score:index:label".
"""

from __future__ import annotations

import math

import numpy as np
import torch

from app.core.errors import TooLarge, invalid
from app.core.postprocess import activate, top_k
from app.core.service import Classifier, RequestStats
from app.oip.codec import InferRequest, Tensor

OUTPUT = "scores"


class _Model:
    input_name = ""

    def __init__(self, clf: Classifier, name: str):
        self.clf, self.name = clf, name
        self.classes = len(clf.model.labels)
        self.version = clf.info["version"]  # the weights' version: a HUP reload brings a new one

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "pytorch",
            "inputs": [self._input_metadata()],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, self.classes]}],
        }

    def config(self) -> dict:
        """Triton's model-configuration extension (its JSON form); perf_analyzer and
        image_client.py require it."""
        cfg = self.clf.cfg
        return {
            "name": self.name,
            "platform": "pytorch",
            "backend": "pytorch",
            "max_batch_size": cfg.max_images_per_request,
            "input": [self._input_config()],
            "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [self.classes]}],
            "dynamic_batching": {
                "preferred_batch_size": [cfg.max_batch_size],
                "max_queue_delay_microseconds": int(cfg.max_batch_delay_ms * 1000),
            },
        }

    def _one_input(self, request: InferRequest) -> Tensor:
        if len(request.inputs) != 1 or request.inputs[0].name != self.input_name:
            got = ", ".join(repr(t.name) for t in request.inputs) or "none"
            spec = self._input_metadata()
            wants = f"{self.input_name!r} ({spec['datatype']} {spec['shape']})"
            raise invalid(f"model {self.name!r} takes one input, {wants}; got {got}")
        return request.inputs[0]

    def _count(self, n: int) -> None:
        limit = self.clf.cfg.max_images_per_request
        if not n:
            raise invalid(f"a request holds 1 to {limit} images (max_batch_size); got none")
        if n > limit:
            raise TooLarge("too_many_images", f"a request holds 1 to {limit} images (max_batch_size); got {n}")

    def infer(self, request: InferRequest, stats: RequestStats) -> list[Tensor]:
        wanted = request.outputs or []
        for out in wanted:
            if out.name != OUTPUT:
                raise invalid(f"unknown output {out.name!r}; model {self.name!r} has {OUTPUT!r}")
        logits = self._logits(request, stats)
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


class ImageModel(_Model):
    input_name = "image"

    def _input_metadata(self) -> dict:
        return {"name": self.input_name, "datatype": "BYTES", "shape": [-1, 1]}

    def _input_config(self) -> dict:
        return {"name": self.input_name, "data_type": "TYPE_STRING", "dims": [1]}

    def _logits(self, request: InferRequest, stats: RequestStats) -> list[np.ndarray]:
        tensor = self._one_input(request)
        shape, count = tensor.shape, len(tensor.data)
        if tensor.datatype == "UINT8":
            if not (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)) or math.prod(shape) != count:
                raise invalid(f"a UINT8 {self.input_name!r} holds one file: shape [{count}], got {shape}")
            blobs = [tensor.data.tobytes()]
        elif tensor.datatype == "BYTES":
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] != count:
                raise invalid(f"{self.input_name!r} has shape {shape} but {count} elements; send shape [{count}, 1]")
            blobs = list(tensor.data)
        else:
            raise invalid(
                f"model {self.name!r} takes encoded files (BYTES or UINT8); send pixels to {self.name}_tensor"
            )
        self._count(len(blobs))
        return self.clf.logits(blobs, stats)


class TensorModel(_Model):
    input_name = "pixels"

    @property
    def size(self) -> int:
        return self.clf.model.preprocess.input_size

    def _input_metadata(self) -> dict:
        return {"name": self.input_name, "datatype": "FP32", "shape": [-1, 3, self.size, self.size]}

    def _input_config(self) -> dict:
        return {
            "name": self.input_name,
            "data_type": "TYPE_FP32",
            "format": "FORMAT_NCHW",
            "dims": [3, self.size, self.size],
        }

    def _logits(self, request: InferRequest, stats: RequestStats) -> list[np.ndarray]:
        tensor, s = self._one_input(request), self.size
        if tensor.datatype != "FP32":
            raise invalid(f"model {self.name!r} takes FP32 pixels; got {tensor.datatype}")
        if len(tensor.shape) != 4 or tensor.shape[1:] != [3, s, s]:
            raise invalid(f"{self.input_name!r} must have shape [N, 3, {s}, {s}] (NCHW RGB); got {tensor.shape}")
        self._count(tensor.shape[0])
        if tensor.data.size != math.prod(tensor.shape):
            raise invalid(f"{self.input_name!r} has shape {tensor.shape} but {tensor.data.size} elements")
        data = tensor.data
        if not (np.isfinite(data).all() and data.min() >= 0 and data.max() <= 255):
            raise invalid(
                f"{self.input_name!r} holds 0-255 RGB pixels (the server normalises them); got others or not finite"
            )
        pixels = torch.from_numpy(np.rint(data).astype(np.uint8).reshape(tensor.shape))
        return self.clf.logits_of_pixels(list(pixels), stats)
