"""The OpenVINO engine (CPU): the network converted to OpenVINO's graph and compiled for this
CPU, with the uint8 -> float normalisation folded into the compiled graph.

Fork safety: OpenVINO starts a TBB thread pool when it converts or compiles, and a pool must
not exist in a gunicorn master that forks. So nothing here runs in the master: each worker
converts (or reads the converted graph from ENGINE_CACHE_DIR, written once under a file lock
by the first worker) and compiles after fork. The compiled graph holds its own copy of the
weights, in its own layout, so each worker adds about the weights' size (docs/operations.md, "Memory").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from app.config import Config

logger = logging.getLogger(__name__)


class OpenVINOEngine:
    name = "openvino"
    device = torch.device("cpu")

    def __init__(self, net: torch.nn.Module, cfg: Config, preprocess, info: dict, threads: int, bf16: bool):
        # OpenVINO's converter sends usage telemetry to Google Analytics, from a forked
        # process, unless its telemetry package is missing (then it uses its own stub). A
        # server must neither call out nor fork from a worker (under gevent that fork hangs
        # the worker), so the package is made to look missing, for this process only.
        sys.modules.setdefault("openvino_telemetry", None)
        import openvino as ov  # here, in the worker: see the module's docstring

        core = ov.Core()
        size = preprocess.input_size
        model = _graph(ov, core, net, size, _cache_path(cfg, info, size, ov.__version__))
        ppp = ov.preprocess.PrePostProcessor(model)
        # The request carries uint8 NCHW pixels (app.model.preprocess); OpenVINO converts and
        # normalises them inside the compiled graph: (x - mean*255) / (std*255).
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        steps.mean([m * 255 for m in preprocess.mean]).scale([s * 255 for s in preprocess.std])
        self.precision = "bf16" if bf16 else "f32"
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,  # one batch at a time per worker (app.core.batching runs one)
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": self.precision,
            # Pinning would put every worker's threads on the same first cores.
            "ENABLE_CPU_PINNING": False,
        }
        self.compiled = core.compile_model(ppp.build(), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()  # one infer request: one batch at a time

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 NCHW images -> float32 logits (a copy: the request reuses its buffers)."""
        with self.lock:
            return self.request.infer({0: batch.numpy()}, share_inputs=True)[0].copy()

    def warm_up(self, max_batch_size: int, input_size: int) -> None:
        for n in sorted({1, max_batch_size}):
            for _ in range(2):
                self(torch.zeros(n, 3, input_size, input_size, dtype=torch.uint8))


def _cache_path(cfg: Config, info: dict, size: int, ov_version: str) -> Path | None:
    """Where the converted graph is kept, keyed by everything it depends on; None for random
    weights, which differ between servers under the same name."""
    if info["untrained"] or not cfg.engine_cache_dir:
        return None
    key = f"{cfg.model_arch}-{info['version']}-{info['num_classes']}-{size}-ov{ov_version}"
    return Path(cfg.engine_cache_dir) / (re.sub(r"[^A-Za-z0-9.-]+", "_", key) + ".xml")  # the version has '/'s


def _graph(ov, core, net: torch.nn.Module, size: int, path: Path | None):
    """The converted graph: read from `path`, or converted (once, under a lock) and saved there."""
    if path is None:
        return _convert(ov, net, size)
    try:
        return _cached_graph(ov, core, net, size, path)
    except OSError as exc:  # a read-only or full disk: the cache is only a start-up speed-up
        logger.warning("ENGINE_CACHE_DIR unusable (%s): converting without it", exc)
        return _convert(ov, net, size)


def _cached_graph(ov, core, net: torch.nn.Module, size: int, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait, then read what the first wrote
        if path.exists():
            with contextlib.suppress(RuntimeError):  # a damaged file: convert again
                return core.read_model(path)
        model = _convert(ov, net, size)
        tmp = path.with_suffix(f".{os.getpid()}.xml")
        ov.save_model(model, tmp, compress_to_fp16=False)  # fp16 storage would change answers
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)
        logger.info("converted the model for OpenVINO into %s", path)
        return model


def _convert(ov, net: torch.nn.Module, size: int):
    # The converter traces with torch.jit, whose deprecation notice would print in every worker.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return ov.convert_model(net, example_input=torch.zeros(1, 3, size, size), input=[(-1, 3, size, size)])
