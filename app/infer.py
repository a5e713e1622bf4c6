"""Inference: put the network on its device, optimise it, warm it up, and run batches.

Runs in the serving process only (a gunicorn worker after fork): it sets thread counts and
touches CUDA, neither of which may happen in a master that forks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable

import numpy as np
import torch

from app.config import Config
from app.gpus import list_gpus

logger = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def cpu_threads(requested: int, workers: int = 1) -> int:
    """Intra-op threads so that workers x threads never exceeds the cores we may use."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def cpu_has_bf16() -> bool:
    # oneDNN runs bf16 fast only with AVX512-BF16 or AMX; elsewhere it is emulated and slower.
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def optimize(net: torch.nn.Module, cfg: Config, input_size: int) -> torch.nn.Module:
    """Graph work done once where the weights are loaded (the gunicorn master), on the CPU.

    Measured on 2 cores, ResNet-18 (README, "Inference options"):
    - folding batch norm into the convolutions: +44% over eager, as torch.fx or TorchScript;
    - under load, the frozen TorchScript graph serves ~9% more than the fx one: it runs all
      its ops in C++, while fx returns to Python (and the GIL, contended by request threads)
      between ops. torch.jit is deprecated in torch 2.15 but this measured win keeps it;
    - oneDNN Graph fusion of the frozen graph (opt-in, ONEDNN_FUSION; see Engine): +10%
      (ResNet-18) and +21% (ResNet-50) forward speed, but ~300 MiB more per worker and RSS
      that kept growing under mixed traffic (+15-22% over 1500 requests);
    - `torch.jit.optimize_for_inference` instead of plain freezing: +3% / +10% forward
      speed, within noise through the stack and with more RSS growth in the soak (+7%);
    - torch.compile (inductor) measured level with the frozen graph (27.5/30.1/33.1 vs
      27.5/30.8/33.1 img/s) after a 28 s compile per process, so it isn't used.
    TorchScript is used for fp32 on the CPU only: autocast (bf16/fp16) needs the Python graph,
    and a frozen graph's constants would not follow `.to("cuda")`. The trace runs one forward
    pass; in a gunicorn master that has a single thread (create_app), so no OpenMP pool is
    forked, and the folded weights are shared copy-on-write by every worker.
    """
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if isinstance(net, torch.jit.ScriptModule):
        return net  # a user's TorchScript archive: already compiled; tracing it again gains nothing
    if cfg.graph == "torchscript" and cfg.precision == "fp32" and not gpu_expected(cfg.device):
        example = torch.zeros(1, 3, input_size, input_size).contiguous(memory_format=memory_format)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice, see above
            traced = torch.jit.trace(net.to(memory_format=memory_format), example, check_trace=False)
            return torch.jit.freeze(traced.eval())  # Engine may turn on oneDNN Graph fusion
    if cfg.graph != "eager":
        from torch.fx.experimental.optimization import fuse

        net = fuse(net)  # builds new, folded weights: convert those, not the originals
    return net.to(memory_format=memory_format)


def gpu_expected(device: str) -> bool:
    """Whether this process will run on a GPU, decided without initialising CUDA."""
    if device != "auto":
        return device.startswith("cuda")
    return bool(list_gpus(os.environ.get("GPUS", ""))) and os.environ.get("CUDA_VISIBLE_DEVICES") != ""


class Engine:
    """A ready-to-run network: `engine(batch) -> float32 logits as numpy`."""

    def __init__(self, net: torch.nn.Module, cfg: Config, normalize: Callable[[torch.Tensor], torch.Tensor]):
        self.normalize = normalize  # uint8 batch -> float input, on the device
        self.device = pick_device(cfg.device)
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        if self.device.type == "cpu" and self.dtype is torch.float16:
            raise ValueError("PRECISION=fp16 needs a GPU; on CPU use bf16 or fp32")
        if self.device.type == "cpu" and self.dtype is torch.bfloat16 and not cpu_has_bf16():
            logger.warning("PRECISION=bf16 on a CPU without AVX512-BF16/AMX: emulated, slower than fp32")
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        # A no-op on the CPU, so workers keep sharing the master's weights.
        self.net = net.to(self.device)
        if cfg.onednn_fusion and isinstance(net, torch.jit.ScriptModule) and self.device.type == "cpu":
            # oneDNN Graph fuses conv/add/relu chains of the frozen graph into single kernels.
            # It compiles per input shape, in this process, on the second run of each batch
            # size: warm_up runs them all. Process-wide, so set in the worker, not the master.
            # Opt-in: +10% (ResNet-18) / +21% (ResNet-50) c=8 throughput against ~300 MiB
            # more per worker and RSS growth under mixed traffic (README, "Inference options").
            torch.jit.enable_onednn_fusion(True)

    def _autocast(self):
        if self.dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 NCHW images -> float32 logits."""
        x = self.normalize(batch.to(self.device, non_blocking=True))
        x = x.contiguous(memory_format=self.memory_format)
        with self._autocast():
            out = self.net(x)
        return out.float().cpu().numpy()

    def warm_up(self, max_batch_size: int, input_size: int) -> None:
        """Run the shapes we will serve so the first real request isn't the slow one.

        Every batch size when there are few (CPU: fused kernels are compiled per shape), else
        the smallest and largest.
        """
        sizes = range(1, max_batch_size + 1) if max_batch_size <= 8 else (1, max_batch_size)
        for n in sizes:
            for _ in range(3):
                self(torch.zeros(n, 3, input_size, input_size, dtype=torch.uint8))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
