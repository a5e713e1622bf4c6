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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from app.config import Config
from app.engines import quantize
from app.engines.quantize import Calibration

logger = logging.getLogger(__name__)


class OpenVINOEngine:
    name = "openvino"
    device = torch.device("cpu")

    def __init__(
        self,
        net: torch.nn.Module,
        cfg: Config,
        preprocess,
        info: dict,
        threads: int,
        precision: str = "fp32",
        calibration: Calibration | None = None,
    ):
        """`precision`: fp32, bf16 (a hint: the CPU plugin runs bf16 where it can) or int8 (the
        graph quantised by NNCF on `calibration`, app.engines.quantize)."""
        # OpenVINO's converter sends usage telemetry to Google Analytics, from a forked
        # process, unless its telemetry package is missing (then it uses its own stub). A
        # server must neither call out nor fork from a worker (under gevent that fork hangs
        # the worker), so the package is made to look missing, for this process only. NNCF
        # reads the same package, and sends nothing without it either.
        sys.modules.setdefault("openvino_telemetry", None)
        import openvino as ov  # here, in the worker: see the module's docstring

        core = ov.Core()
        size = preprocess.input_size
        path = _cache_path(cfg, info, size, ov.__version__)
        model = _graph(ov, core, lambda: _convert(ov, net, size), path)
        if precision == "int8":
            key = quantize.cache_key(calibration, preprocess, cfg.calibration_size)
            float_model = model
            model = _graph(
                ov,
                core,
                lambda: quantize.quantize(float_model, calibration, preprocess.normalize, cfg.calibration_size),
                path and path.with_name(f"{path.stem}-int8-{key}.xml"),
                "quantised the model to int8 into",
            )
        ppp = ov.preprocess.PrePostProcessor(model)
        # The request carries uint8 NCHW pixels (app.model.preprocess); OpenVINO converts and
        # normalises them inside the compiled graph: (x - mean*255) / (std*255).
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
        steps.mean([m * 255 for m in preprocess.mean]).scale([s * 255 for s in preprocess.std])
        self.precision = precision
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,  # one batch at a time per worker (app.core.batching runs one)
            "PERFORMANCE_HINT": "LATENCY",
            # int8 runs its quantised ops in int8 whatever the hint; the rest in f32.
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
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


def _graph(ov, core, make: Callable, path: Path | None, made: str = "converted the model for OpenVINO into"):
    """The graph `make()` gives: read from `path`, or made (once, under a lock) and saved there."""
    if path is None:
        return make()
    try:
        return _cached_graph(ov, core, make, path, made)
    except OSError as exc:  # a read-only or full disk: the cache is only a start-up speed-up
        logger.warning("ENGINE_CACHE_DIR unusable (%s): converting without it", exc)
        return make()


def _cached_graph(ov, core, make: Callable, path: Path, made: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    # A lock per graph: the int8 graph is made from the float one, under its own lock.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait, then read what the first wrote
        if path.exists():
            with contextlib.suppress(RuntimeError):  # a damaged file: make it again
                return core.read_model(path)
        model = make()
        tmp = path.with_suffix(f".{os.getpid()}.xml")
        ov.save_model(model, tmp, compress_to_fp16=False)  # fp16 storage would change answers
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)
        logger.info("%s %s", made, path)
        return model


def _convert(ov, net: torch.nn.Module, size: int):
    # The converter traces with torch.jit, whose deprecation notice would print in every worker.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return ov.convert_model(net, example_input=torch.zeros(1, 3, size, size), input=[(-1, 3, size, size)])
