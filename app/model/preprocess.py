"""Preprocessing: RGB PIL image -> uint8 CHW tensor; normalisation happens per batch.

Resizing and cropping match how the weights were trained: by default the preset of MODEL_ARCH's
published weights (resize, crop, interpolation, mean/std; app.model.archs), which a checkpoint
fine-tuned from them shares. RESIZE_SIZE, CROP_SIZE, INTERPOLATION, MEAN and STD each replace
their part of it; RESIZE_MODE=squash resizes to an exact square instead, as seed 001 did.

Per image, only PIL and numpy run (no torch op), so request threads never start their own
OpenMP teams to fight the forward pass for the cores. Conversion to float and mean/std
normalisation run once per batch, on the model's device (`normalize`), which also keeps
queued images 4x smaller and moves 4x fewer bytes to a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from app.config import Config, ConfigError
from app.model.archs import Preset

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocess:
    resize: Callable[[Image.Image], Image.Image]  # PIL -> PIL: resize and crop
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Smallest decode size that loses nothing: the JPEG decoder may scale down to this.
    min_decode_size: int
    input_size: int  # the side of the square the network sees
    description: str

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = np.array(self.resize(image), dtype=np.uint8)  # HWC, writable (torch needs it)
        return torch.from_numpy(pixels).permute(2, 0, 1)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> float NCHW, as ToTensor + Normalize would give: (x/255 - mean) / std."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1) * 255
        return (batch.float() - mean) / std


@dataclass(frozen=True)
class ShortSideCrop:
    """torchvision's Resize(resize) + CenterCrop(crop) on a PIL image, computing only the
    pixels the crop keeps.

    Resizing the whole image first costs what the *resized* image costs, which the pixel
    limit does not bound: a 1,000,000 x 64 PNG (64 MP) becomes 4,000,000 x 256 before the
    crop, 3 GB of RGB. Pillow's `resize(box=...)` resamples just the source region that
    maps onto the crop, with the same filter taps (pixels outside the box still feed the
    edge taps), so the cost is that of a crop x crop output whatever the aspect ratio. The
    pixels equal torchvision's within float rounding of the filter weights: +-1 (rarely 2)
    on up to ~2% of them (tests/test_decode.py compares the two).
    """

    resize: int
    crop: int
    resample: int = Image.Resampling.BILINEAR

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        # torchvision's output size for an int: the short side to `resize`, the long one in ratio.
        new_w, new_h = (self.resize, int(self.resize * h / w)) if w <= h else (int(self.resize * w / h), self.resize)
        left, top = int(round((new_w - self.crop) / 2.0)), int(round((new_h - self.crop) / 2.0))
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
        return image.resize((self.crop, self.crop), self.resample, box=box)


def build_preprocess(cfg: Config, preset: Preset) -> Preprocess:
    """The architecture's preset, with each setting the config gives in its place."""
    resize, crop = cfg.resize_size or preset.resize, cfg.crop_size or preset.crop
    resample = FILTERS[cfg.interpolation] if cfg.interpolation else preset.interpolation
    mean, std = cfg.mean or preset.mean, cfg.std or preset.std
    if cfg.resize_mode == "squash":
        steps = SquashResize(crop, resample)
        min_size = crop
    elif crop > resize:
        raise ConfigError(
            f"the crop ({crop}) exceeds the resize ({resize}) for MODEL_ARCH={cfg.model_arch} "
            f"(its preset: {preset.resize}/{preset.crop}); set RESIZE_SIZE >= CROP_SIZE"
        )
    else:
        steps = ShortSideCrop(resize, crop, resample)
        min_size = resize
    changed = [name for name in ("resize_size", "crop_size", "interpolation", "mean", "std") if getattr(cfg, name)]
    description = f"{cfg.resize_mode} {resize}/{crop} {Image.Resampling(resample).name.lower()} from {preset.source}"
    if changed:
        description += f" (set: {', '.join(changed)})"
    return Preprocess(steps, tuple(mean), tuple(std), min_size, crop, description)


@dataclass(frozen=True)
class SquashResize:
    """Seed 001's exact square resize (the aspect ratio is not kept)."""

    size: int
    resample: int

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.resize((self.size, self.size), self.resample, reducing_gap=None)
