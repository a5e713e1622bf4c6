"""Inference engines behind one interface, and the choice among them (ENGINE).

An engine is `engine(uint8 NCHW batch) -> float32 logits (numpy)`, plus `warm_up`, `name`
and `device`. Engines: `torch` (the frozen TorchScript graph; also the only GPU engine) and
`openvino` (CPU). ONNX Runtime was measured and not added: it led nowhere (docs/performance.md,
"Engines").

ENGINE=auto (the default) builds both on the CPU, in each worker after fork, keeps those whose
answers on a probe batch equal torch fp32's within TOLERANCE, times them in alternation and
keeps the fastest; torch unless another is at least MARGIN faster, so noise doesn't flip it.

PRECISION=int8 is OpenVINO's alone (NNCF quantises its graph), and only that setting
quantises: auto at fp32 never tries int8, since int8 changes answers by design. With int8,
torch runs fp32, as the reference and as auto's other candidate; auto applies the same rule
(int8 within TOLERANCE["int8"] of torch fp32 on the probe batch, else torch, logged), and
ENGINE=openvino serves int8 but logs how far it is from fp32.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Protocol

import numpy as np
import torch

from app.config import Config, ConfigError
from app.engines.quantize import Calibration
from app.engines.torch_engine import TorchEngine
from app.model.infer import pick_device
from app.model.loading import LoadedModel

logger = logging.getLogger(__name__)
# Largest logit difference from torch fp32, relative to the logits' scale: float32 engines
# differ by summation order only (about 1e-6 measured); bf16 keeps 8 bits of mantissa. int8
# gets bf16's bound: auto serves it only where it moves answers no more than bf16 may. The
# random-weight stand-ins measured 0.09-0.61 on the probe batch, so auto keeps torch for them
# (docs/performance.md, "int8"); ENGINE=openvino serves int8 regardless.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "int8": 5e-2}
MARGIN = 1.05


class Engine(Protocol):
    name: str
    device: torch.device
    precision: str  # what it runs, which may differ from PRECISION when auto fell back

    def __call__(self, batch: torch.Tensor) -> np.ndarray: ...

    def warm_up(self, max_batch_size: int, input_size: int) -> None: ...


def build_engine(model: LoadedModel, cfg: Config, threads: int, calibration: Calibration | None = None) -> Engine:
    """The engine ENGINE asks for; called in the serving process (a worker, after fork).
    `calibration`: the images PRECISION=int8 quantises with (app.core.calibration)."""
    cpu = pick_device(cfg.device).type == "cpu"
    int8 = cfg.precision == "int8"
    if int8 and not cpu:
        raise ConfigError("PRECISION=int8 runs on the CPU (OpenVINO) but this worker has a GPU: set DEVICE=cpu")
    reference = TorchEngine(
        model.net, dataclasses.replace(cfg, precision="fp32") if int8 else cfg, model.preprocess.normalize
    )
    if cfg.engine == "torch" or not cpu:
        return reference
    try:
        from app.engines.openvino_engine import OpenVINOEngine
    except ImportError:
        if cfg.engine == "openvino" or int8:
            what = "PRECISION=int8" if int8 else "ENGINE=openvino"
            raise ConfigError(f"{what} but OpenVINO is not installed: pip install openvino") from None
        return reference
    try:
        other = OpenVINOEngine(model.net, cfg, model.preprocess, model.info, threads, cfg.precision, calibration)
    except ConfigError:
        raise  # int8 without NNCF, or calibration images that don't decode: the user's to fix
    except Exception as exc:  # noqa: BLE001 - the converter meets arbitrary model code; torch still serves it
        logger.error("ENGINE=%s: OpenVINO can't convert %s (%s): serving with torch", cfg.engine, cfg.model_arch, exc)
        return reference
    if cfg.engine == "openvino":
        if int8:  # served as asked; the log says how far from fp32
            batch = probe_batch(4, model.preprocess.input_size)
            d = drift(other(batch), reference.fp32(batch))
            log = logger.info if d <= TOLERANCE["int8"] else logger.warning
            log(
                "PRECISION=int8: differs from torch fp32 by %.2g on the probe batch (auto's bound: %g)",
                d,
                TOLERANCE["int8"],
            )
        return other
    return fastest([reference, other], reference, cfg, model.preprocess.input_size)


def probe_batch(n: int, size: int) -> torch.Tensor:
    """Deterministic images for the comparison: smooth gradients plus noise, like photos enough
    to give spread-out logits."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 255, size).view(1, 1, 1, size).expand(n, 3, size, size)
    noise = torch.randint(-40, 40, (n, 3, size, size), generator=g)
    return (ramp + noise).clamp(0, 255).to(torch.uint8)


def drift(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / (1 + np.abs(ref).max()))


def fastest(engines: list[Engine], reference: TorchEngine, cfg: Config, size: int) -> Engine:
    batch = probe_batch(min(cfg.max_batch_size, 4), size)
    ref = reference.fp32(batch)
    usable = []
    for engine in engines:
        d = drift(engine(batch), ref)
        if d <= TOLERANCE[cfg.precision]:
            usable.append(engine)
        else:
            logger.warning(
                "ENGINE=auto: %s differs from torch fp32 by %.2g (> %g): not used",
                engine.name,
                d,
                TOLERANCE[cfg.precision],
            )
    if not usable:  # e.g. a model whose outputs are NaN: nothing to compare, torch is the reference
        logger.warning("ENGINE=auto: no engine agrees with torch fp32 on the probe batch: serving with torch")
        return reference
    seconds = {engine.name: [] for engine in usable}
    for _ in range(3):  # alternating rounds: drift in the machine's speed hits every engine
        for engine in usable:
            started = time.perf_counter()
            engine(batch)
            seconds[engine.name].append(time.perf_counter() - started)
    speed = {name: len(batch) / float(np.median(s)) for name, s in seconds.items()}
    best = max(usable, key=lambda e: speed[e.name] / (1 if e is reference else MARGIN))
    logger.info(
        "ENGINE=auto chose %s: %s img/s on batch %d",
        best.name,
        ", ".join(f"{name} {s:.1f}" for name, s in speed.items()),
        len(batch),
    )
    return best
