"""PRECISION=int8: NNCF post-training quantisation of the converted OpenVINO graph.

NNCF runs the float graph over the calibration images, records each activation's range, and
inserts int8 FakeQuantize nodes that OpenVINO's CPU plugin runs as int8 kernels. Only an
explicit PRECISION=int8 gets here: ENGINE=auto never quantises on its own (app.engines).

NNCF is optional for serving, like timm: it brings scipy and scikit-learn (+242 MiB in a
serving venv) that only int8 uses. It is imported here, in the worker, after OpenVINO.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Callable
from typing import Protocol

import torch

from app.config import ConfigError

logger = logging.getLogger(__name__)
NNCF_PIP = "pip install nncf==3.4.0"
# Symmetric int8 weights and activations: the CPU's fastest int8 kernels. "mixed" (asymmetric
# activations) suits activations that go negative (GELU, SiLU); NNCF picks it for transformers.
PRESET = "performance"


class Calibration(Protocol):
    """app.core.calibration.CalibrationSet, as the engine sees it."""

    fingerprint: str

    def images(self) -> list[torch.Tensor]: ...


def nncf_version() -> str:
    # NNCF imports torch's extension builder, which warns in every CPU-only process that CUDA
    # is missing; nothing here builds an extension.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        raise ConfigError(f"PRECISION=int8 needs NNCF, which is not installed: {NNCF_PIP}") from None
    return nncf.__version__


def cache_key(calibration: Calibration, preprocess, subset: int) -> str:
    """What the int8 graph depends on beyond the float graph's own key: NNCF, its settings, the
    calibration images and how they are preprocessed."""
    parts = [nncf_version(), PRESET, subset, calibration.fingerprint, preprocess.description]
    parts += [preprocess.mean, preprocess.std]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def has_attention(model) -> bool:
    """Whether the graph attends (ViT, Swin, MaxViT, timm's): a classifier's graph ends in
    logits, so a Softmax inside it is attention's. NNCF then keeps the parts of attention
    that int8 hurts in float (its "transformer" model type)."""
    return any(op.get_type_name() == "Softmax" for op in model.get_ops())


def quantize(model, calibration: Calibration, normalize: Callable, subset: int):
    """The int8 version of `model` (an ov.Model taking normalised float NCHW)."""
    nncf_version()  # a clear error before any work
    import nncf

    nncf.set_log_level(logging.WARNING)  # its INFO lines would fill the server log
    images = calibration.images()
    logger.info(
        "PRECISION=int8: quantising once on %d images (kept in ENGINE_CACHE_DIR for trained weights)", len(images)
    )
    started = time.perf_counter()
    # One image per item, so subset_size counts images.
    dataset = nncf.Dataset(images, lambda image: normalize(image[None]).numpy())
    # NNCF's progress bars (rich, on sys.stdout) are dropped: in a log they are noise. Safe
    # to swap stdout here: the worker serves nothing until its engine is built.
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(
            model,
            dataset,
            preset=nncf.QuantizationPreset(PRESET),
            subset_size=min(subset, len(images)),
            model_type=nncf.ModelType.TRANSFORMER if has_attention(model) else None,
        )
    logger.info(
        "PRECISION=int8: quantised on %d images in %.1f s", min(subset, len(images)), time.perf_counter() - started
    )
    return quantized
