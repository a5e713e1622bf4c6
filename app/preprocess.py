"""Preprocessing: RGB PIL image -> normalised CHW float tensor, exactly as the weights were trained.

torchvision weights carry their own preset (resize, crop, interpolation, mean/std), used as is.
For a user checkpoint the same steps are built from the config: resize the shorter side and
center-crop (the torchvision recipe), or "squash" to an exact square as seed 001 did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models import WeightsEnum

from app.config import Config


@dataclass(frozen=True)
class Preprocess:
    transform: Callable[[Image.Image], torch.Tensor]
    # Smallest decode size that loses nothing: the JPEG decoder may scale down to this.
    min_decode_size: int
    input_size: int  # the side of the square the network sees
    description: str

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)


def build_preprocess(cfg: Config, tv_weights: WeightsEnum | None = None) -> Preprocess:
    if tv_weights is not None:
        preset = tv_weights.transforms()
        return Preprocess(
            preset, int(preset.resize_size[0]), int(preset.crop_size[0]), f"torchvision preset: {preset!r}"
        )
    if cfg.resize_mode == "squash":
        resize = T.Resize((cfg.crop_size, cfg.crop_size), antialias=True)
        min_size = cfg.crop_size
    else:
        resize = T.Compose([T.Resize(cfg.resize_size, antialias=True), T.CenterCrop(cfg.crop_size)])
        min_size = cfg.resize_size
    transform = T.Compose([resize, T.PILToTensor(), T.ConvertImageDtype(torch.float32), T.Normalize(cfg.mean, cfg.std)])
    return Preprocess(transform, min_size, cfg.crop_size, f"{cfg.resize_mode} {cfg.resize_size}/{cfg.crop_size}")
