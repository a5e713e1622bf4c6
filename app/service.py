"""The classifier one process serves: decode -> preprocess -> batched infer -> postprocess.

Built in two steps so that gunicorn can load the weights once in its master (`Classifier(...)`)
and start each worker after fork (`start()`: threads, device, optimisation, warm-up).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import numpy as np
import torch

from app.batching import Batcher, run_here
from app.config import Config
from app.decode import decode_image
from app.infer import Engine, cpu_threads, release_free_memory
from app.metrics import observe_batch
from app.model import LoadedModel
from app.postprocess import activate, describe

logger = logging.getLogger(__name__)


def blocking_offload() -> Callable:
    """Under gevent, CPU-bound calls go to a real thread so the hub keeps serving."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return run_here
    if not monkey.is_module_patched("threading"):
        return run_here
    pool = get_hub().threadpool
    return lambda fn, *args: pool.apply(fn, args)


class Classifier:
    def __init__(self, cfg: Config, model: LoadedModel):
        self.cfg, self.model = cfg, model
        self.info = model.info
        self.engine: Engine | None = None
        self.batcher: Batcher | None = None
        self.offload: Callable = run_here

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def start(self) -> None:
        """Make this process ready to serve; idempotent."""
        if self.ready:
            return
        cfg = self.cfg
        torch.set_num_threads(cpu_threads(cfg.torch_threads))
        sys.setswitchinterval(cfg.gil_switch_ms / 1000)
        self.engine = Engine(self.model.net, cfg, self.model.preprocess.normalize)
        if cfg.warmup:
            self.engine.warm_up(cfg.max_batch_size, self.model.preprocess.input_size)
            release_free_memory()
        self.offload = blocking_offload()
        self.batcher = Batcher(
            self._run_batch,
            cfg.max_batch_size,
            cfg.max_queue,
            cfg.max_batch_delay_ms / 1000,
            cfg.request_timeout_s,
            self.offload,
            cfg.shed_delay_ms / 1000,
        )
        logger.info(
            "model ready: %s on %s, %d threads, %s",
            self.info["weights"],
            self.engine.device,
            torch.get_num_threads(),
            self.model.preprocess.description,
        )

    def prepare(self, data: bytes) -> torch.Tensor:
        image = decode_image(
            data, self.cfg.max_image_pixels, self.model.preprocess.min_decode_size if self.cfg.jpeg_draft else 0
        )
        return self.model.preprocess(image)

    def _run_batch(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        observe_batch(len(tensors))
        logits = self.engine(torch.stack(tensors))
        return [activate(row, self.cfg.activation_fn) for row in logits]

    def classify(self, blobs: list[bytes]) -> list[dict]:
        with self.batcher.admit(len(blobs)):
            tensors = [self.offload(self.prepare, data) for data in blobs]
        rows = self.batcher.submit(tensors)
        cfg = self.cfg
        return [describe(row, self.model.labels, cfg.model_task, cfg.top_k, cfg.threshold) for row in rows]
