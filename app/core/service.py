"""The classifier one process serves: decode -> preprocess -> batched infer -> postprocess.

Built in two steps so that gunicorn can load the weights once in its master (`Classifier(...)`)
and start each worker after fork (`start()`: threads, device, optimisation, warm-up).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from app.config import Config
from app.core.batching import Batcher, run_here
from app.core.cache import NoCache, ResultCache, build_cache
from app.core.calibration import CalibrationSet
from app.core.decode import decode_image
from app.core.errors import NotReady, ServiceError
from app.core.postprocess import activate, describe
from app.engines import Engine, build_engine
from app.model.infer import cpu_threads
from app.model.loading import LoadedModel
from app.telemetry.metrics import MODEL_INFO, QUEUE_DEPTH, WARMUP_SECONDS, observe_batch

logger = logging.getLogger(__name__)


@dataclass
class RequestStats:
    """What one request went through, for its log line, Server-Timing and metrics."""

    images: int = 0
    sizes: list[str] = field(default_factory=list)  # "WxH" of each upload as decoded
    decode_s: float = 0.0  # decode + preprocess, all images
    queue_s: float = 0.0  # the slowest image's wait for the model
    run_s: float = 0.0  # the forward pass its batch took
    cache: str = ""  # hit | miss | bypass, for /model_predict (app.core.cache)


class Classifier:
    def __init__(self, cfg: Config, model: LoadedModel):
        self.cfg, self.model = cfg, model
        self.info = model.info
        self.engine: Engine | None = None
        self.batcher: Batcher | None = None
        self.offload: Callable = run_here
        self.cache: ResultCache | NoCache = NoCache()
        self._decode_slots: threading.BoundedSemaphore | None = None  # made in start()

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    def start(self, offload: Callable = run_here) -> None:
        """Make this process ready to serve; idempotent. `offload` runs CPU-bound calls (the
        runtime passes gevent's thread pool under gevent workers; app.runtime.hooks)."""
        if self.ready:
            return
        cfg = self.cfg
        threads = cpu_threads(cfg.torch_threads)
        torch.set_num_threads(threads)
        sys.setswitchinterval(cfg.gil_switch_ms / 1000)
        # PRECISION=int8 calibrates on images decoded and preprocessed as requests are.
        self.engine = build_engine(self.model, cfg, threads, CalibrationSet(cfg, self.prepare))
        if cfg.warmup:
            started = time.perf_counter()
            self.engine.warm_up(cfg.max_batch_size, self.model.preprocess.input_size)
            WARMUP_SECONDS.set(time.perf_counter() - started)
        MODEL_INFO.labels(self.info["version"], self.info["weights"]).set(1)  # which weights this worker serves
        self.offload = offload
        # Made here, after gevent (if any) has patched threading: the wait must yield the hub.
        self._decode_slots = threading.BoundedSemaphore(cfg.decode_concurrency or max(2, threads))
        self.cache = build_cache(cfg, self.model, self.engine)
        self.batcher = Batcher(
            self._run_batch,
            cfg.max_batch_size,
            cfg.max_queue,
            cfg.max_batch_delay_ms / 1000,
            cfg.request_timeout_s,
            self.offload,
            cfg.shed_delay_ms / 1000,
            QUEUE_DEPTH.set,
        )
        logger.info(
            "model ready in pid %d: arch=%s weights=%s version=%s labels=%s task=%s engine=%s device=%s precision=%s "
            "graph=%s threads=%d max_batch_size=%d max_queue=%d preprocess=%s",
            os.getpid(),
            cfg.model_arch,
            self.info["weights"],
            self.info["version"],
            cfg.model_labels or "(from the weights)",
            cfg.model_task,
            self.engine.name,
            self.engine.device,
            self.engine.precision,
            cfg.graph,
            torch.get_num_threads(),
            cfg.max_batch_size,
            cfg.max_queue,
            self.model.preprocess.description,
        )

    def admit(self) -> None:
        """Refuse a prediction before its body is read: the model isn't started, or the queue is
        full. app.core.guard asks this for every door, before the request is read."""
        if not self.ready:
            raise NotReady()
        self.batcher.check_capacity()

    def prepare(self, data: bytes) -> tuple[torch.Tensor, str]:
        """Decode + preprocess one upload; also returns its decoded size as "WxH"."""
        image = decode_image(
            data,
            self.cfg.max_image_pixels,
            self.model.preprocess.min_decode_size if self.cfg.jpeg_draft else 0,
            self.cfg.max_aspect_ratio,
        )
        return self.model.preprocess(image), f"{image.width}x{image.height}"

    def _prepare_part(self, index: int, blobs: list[bytes]) -> tuple[torch.Tensor, str]:
        """One part of a request. A bad part refuses the whole request, naming the part: an
        answer with holes in it would be easy to misread as a full one."""
        try:
            with self._decode_slots:  # bounds the decode memory of the whole worker
                return self.offload(self.prepare, blobs[index])
        except ServiceError as exc:
            if len(blobs) > 1:
                raise exc.within(f"image {index + 1} of {len(blobs)}") from None
            raise

    def _run_batch(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        started = time.perf_counter()
        logits = self.engine(torch.stack(tensors))
        observe_batch(len(tensors), time.perf_counter() - started)
        return list(logits)

    def scores(self, blobs: list[bytes], stats: RequestStats | None = None) -> list[np.ndarray]:
        """Activated scores per image."""
        return [activate(row, self.cfg.activation_fn) for row in self.logits(blobs, stats)]

    def logits(self, blobs: list[bytes], stats: RequestStats | None = None) -> list[np.ndarray]:
        """The model's raw outputs per image: the one path every protocol's request takes."""
        stats = stats if stats is not None else RequestStats()
        stats.images = len(blobs)
        started = time.perf_counter()
        with self.batcher.admit(len(blobs)):
            prepared = [self._prepare_part(i, blobs) for i in range(len(blobs))]
        stats.decode_s = time.perf_counter() - started
        stats.sizes = [size for _, size in prepared]
        return self._submit([tensor for tensor, _ in prepared], stats)

    def logits_of_pixels(self, pixels: list[torch.Tensor], stats: RequestStats) -> list[np.ndarray]:
        """The raw outputs for images the client decoded and sized itself (uint8 CHW at the
        model's input size): the same batcher and engine, without decode and resize."""
        stats.images = len(pixels)
        stats.sizes = [f"{t.shape[2]}x{t.shape[1]}" for t in pixels]
        return self._submit(pixels, stats)

    def _submit(self, tensors: list[torch.Tensor], stats: RequestStats) -> list[np.ndarray]:
        done = self.batcher.submit(tensors)
        stats.queue_s, stats.run_s = done.queue_s, done.run_s
        return done.results

    def classify(self, blobs: list[bytes], stats: RequestStats | None = None) -> list[dict]:
        """Per-image answers; images already in the result cache skip decode and inference."""
        cfg, labels = self.cfg, self.model.labels
        stats = stats if stats is not None else RequestStats()
        keys, answers, stats.cache = self.cache.lookup(blobs)
        todo = [i for i, answer in enumerate(answers) if answer is None]
        if todo:
            rows = self.logits([blobs[i] for i in todo], stats)
            for i, row in zip(todo, rows, strict=True):
                scores = activate(row, cfg.activation_fn)
                answers[i] = describe(scores, labels, cfg.model_task, cfg.top_k, cfg.threshold, row)
            if keys:
                self.cache.store([keys[i] for i in todo], [answers[i] for i in todo])
        stats.images = len(blobs)
        return answers
