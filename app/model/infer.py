"""Inference helpers: the device, thread counts, native bf16, and the graph work (`optimize`)
done where the weights are loaded. The engines that run batches are in app.engines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings

import torch

from app.config import Config
from app.model.gpus import list_gpus

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


def native_precision(cfg: Config) -> Config:
    """`cfg`, with PRECISION=bf16 turned into fp32 on a CPU that would only emulate bf16:
    emulated, it measured 0.36-0.44x the speed of fp32, and answers drift for nothing."""
    if cfg.precision != "bf16" or gpu_expected(cfg.device) or cpu_has_bf16():
        return cfg
    logger.warning("PRECISION=bf16 on a CPU without AVX512-BF16 or AMX would be emulated and slower: using fp32")
    return dataclasses.replace(cfg, precision="fp32")


def optimize(net: torch.nn.Module, cfg: Config, input_size: int) -> torch.nn.Module:
    """Graph work done once where the weights are loaded (the gunicorn master), on the CPU.

    Measured on 2 cores, ResNet-18 (docs/performance.md, "Inference options"):
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
    net = net.to(memory_format=memory_format)
    # int8: torch runs fp32 (app.engines), and OpenVINO quantises the graph fp32 converts.
    if cfg.graph == "torchscript" and cfg.precision in ("fp32", "int8") and not gpu_expected(cfg.device):
        traced = _frozen_trace(net, input_size, memory_format)
        if traced is not None:
            return traced  # Engine may turn on oneDNN Graph fusion
    if cfg.graph != "eager":  # fx; also torchscript where it isn't used (bf16, GPUs) or failed
        from torch.fx.experimental.optimization import fuse

        try:
            return fuse(net).to(memory_format=memory_format)  # new, folded weights
        except Exception as exc:  # noqa: BLE001 - any model code may refuse symbolic tracing
            what = type(net).__name__
            logger.warning("GRAPH=%s: %s can't be traced symbolically (%s): running it eagerly", cfg.graph, what, exc)
    return net


def _frozen_trace(net: torch.nn.Module, size: int, memory_format: torch.memory_format) -> torch.nn.Module | None:
    """The frozen TorchScript trace of `net`, or None (logged) when it can't be traced or the
    trace doesn't give the module's answers at another batch size: a trace records one run, so
    a model that branches on its input's shape would be served wrongly, not slowly."""
    one, two = (torch.rand(n, 3, size, size).contiguous(memory_format=memory_format) for n in (1, 2))
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice (see above); TracerWarnings
        try:
            traced = torch.jit.freeze(torch.jit.trace(net, one, check_trace=False).eval())
            agree = torch.allclose(traced(two), net(two), rtol=1e-3, atol=1e-4)
        except Exception as exc:  # noqa: BLE001 - any model code may refuse tracing
            logger.warning("GRAPH=torchscript: tracing %s failed (%s): running it eagerly", type(net).__name__, exc)
            return None
    if not agree:
        what = type(net).__name__
        logger.warning("GRAPH=torchscript: the trace of %s disagrees with it at batch 2: running it eagerly", what)
        return None
    return traced


def gpu_expected(device: str) -> bool:
    """Whether this process will run on a GPU, decided without initialising CUDA."""
    if device != "auto":
        return device.startswith("cuda")
    return bool(list_gpus(os.environ.get("GPUS", ""))) and os.environ.get("CUDA_VISIBLE_DEVICES") != ""
