"""The images PRECISION=int8 calibrates on (app.engines.quantize): CALIBRATION_DIR's files,
decoded and preprocessed exactly as requests are (Classifier.prepare), or, without it, a small
generated set that lets a smoke test start but says nothing about accuracy.

It lives in the core because decoding does; the engines see only `fingerprint` and `images()`,
and call `images()` only when they quantise (a cached int8 graph needs no pixels).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from app.config import MIN_CALIBRATION_IMAGES, Config, ConfigError, calibration_files
from app.core.errors import ServiceError

logger = logging.getLogger(__name__)
GENERATED = 32  # the smoke-test set: enough for NNCF to run, quick to make (~0.5 s)


class CalibrationSet:
    def __init__(self, cfg: Config, prepare: Callable[[bytes], tuple[torch.Tensor, str]]):
        self.cfg, self.prepare = cfg, prepare

    @cached_property
    def files(self) -> list[Path]:
        """Read only when int8 is built (CALIBRATION_DIR is ignored otherwise)."""
        cfg = self.cfg
        return calibration_files(cfg.calibration_dir)[: cfg.calibration_size] if cfg.calibration_dir else []

    @cached_property
    def fingerprint(self) -> str:
        """Names and bytes of the images, and how they are decoded: a new photo, or another
        JPEG_DRAFT, gives another int8 graph."""
        digest = hashlib.sha256(f"draft={self.cfg.jpeg_draft};generated={GENERATED}".encode())
        for path in self.files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:12]

    def images(self) -> list[torch.Tensor]:
        """uint8 CHW tensors, as the batcher receives them."""
        if not self.files:
            logger.warning(
                "PRECISION=int8 without CALIBRATION_DIR: calibrating on %d generated images, fit for a smoke test "
                "only; for accurate int8 answers set CALIBRATION_DIR to a few hundred images like those you serve",
                GENERATED,
            )
            return [self.prepare(_encoded(generated(seed)))[0] for seed in range(GENERATED)]
        images = []
        for path in self.files:
            try:
                images.append(self.prepare(path.read_bytes())[0])
            except ServiceError as exc:  # what a request with this file would have been told
                logger.warning("CALIBRATION_DIR: skipping %s: %s", path.name, exc.message)
        if len(images) < MIN_CALIBRATION_IMAGES:
            raise ConfigError(
                f"CALIBRATION_DIR={self.cfg.calibration_dir!r}: only {len(images)} images decode; "
                f"int8 calibration needs at least {MIN_CALIBRATION_IMAGES} (best 300) like those you serve"
            )
        logger.info("PRECISION=int8: calibrating on %d images from %s", len(images), self.cfg.calibration_dir)
        return images


def generated(seed: int, size: tuple[int, int] = (320, 256)) -> Image.Image:
    """A deterministic stand-in for a photo: a smooth colour field with a few shapes, so the
    network sees edges, flat areas and varied colours (activation ranges like a photo's)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi, 3)
    field = np.stack([np.cos(a) * x / w + np.sin(a) * y / h for a in angle], axis=-1)
    pixels = (rng.uniform(30, 120, 3) + field * rng.uniform(60, 130, 3) + rng.normal(0, 6, (h, w, 3))).clip(0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        box = (x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def _encoded(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
