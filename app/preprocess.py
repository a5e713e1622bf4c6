"""Preprocessing: RGB PIL image -> uint8 CHW tensor; normalisation happens per batch.

Resizing and cropping match how the weights were trained. torchvision weights carry their own
preset (resize, crop, interpolation, mean/std), and its values are used as they are. A user
checkpoint gets the same steps from the config: resize the shorter side and center-crop (the
torchvision recipe), or "squash" to an exact square as seed 001 did.

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
from torchvision import transforms as T
from torchvision.models import WeightsEnum

from app.config import Config


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


def build_preprocess(cfg: Config, tv_weights: WeightsEnum | None = None) -> Preprocess:
    if tv_weights is not None:
        preset = tv_weights.transforms()
        resize, crop = int(preset.resize_size[0]), int(preset.crop_size[0])
        steps = T.Compose([T.Resize(resize, interpolation=preset.interpolation, antialias=True), T.CenterCrop(crop)])
        return Preprocess(steps, tuple(preset.mean), tuple(preset.std), resize, crop, f"torchvision preset {preset!r}")
    if cfg.resize_mode == "squash":
        steps = T.Resize((cfg.crop_size, cfg.crop_size), antialias=True)
        min_size = cfg.crop_size
    else:
        steps = T.Compose([T.Resize(cfg.resize_size, antialias=True), T.CenterCrop(cfg.crop_size)])
        min_size = cfg.resize_size
    description = f"{cfg.resize_mode} {cfg.resize_size}/{cfg.crop_size}"
    return Preprocess(steps, cfg.mean, cfg.std, min_size, cfg.crop_size, description)
