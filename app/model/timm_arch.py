"""timm models (MODEL_ARCH=timm:<name>), an optional dependency: `pip install timm`.

The preprocessing is timm's own: `resolve_data_config` on the model's `pretrained_cfg`, as the
same resize-shorter-side + center-crop that timm's eval transform does (resize =
floor(crop / crop_pct)). Published weights (MODEL_WEIGHTS=imagenet) come from the Hugging Face
hub through `timm.create_model(pretrained=True)`, hash-checked by huggingface_hub and cached
under weights/hf; a machine that can't reach the hub serves a checkpoint file instead.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import torch
from PIL import Image

from app.config import ConfigError
from app.model.archs import Arch, Preset, Published
from app.model.preprocess import FILTERS


def timm_arch(configured: str, name: str) -> Arch:
    try:
        import timm
        from timm.data import ImageNetInfo, resolve_data_config
    except ImportError:
        raise ConfigError(f"MODEL_ARCH={configured!r} needs timm, which is not installed: pip install timm") from None
    if not timm.is_model(name):
        near = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=4, cutoff=0.6)
        hint = f"; similar ones: {', '.join(near)}" if near else "; `timm.list_models()` names them"
        raise ConfigError(f"MODEL_ARCH={configured!r}: timm has no model {name!r}{hint}")

    def build(num_classes: int) -> torch.nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    with torch.device("meta"):
        data = resolve_data_config({}, model=build(1000))
    if data.get("crop_mode", "center") != "center":
        mode = data["crop_mode"]
        raise ConfigError(f"MODEL_ARCH={configured!r}: timm's crop mode {mode!r} isn't served (center only)")
    crop = int(data["input_size"][-1])
    preset = Preset(
        math.floor(crop / data["crop_pct"]),
        crop,
        FILTERS.get(data["interpolation"], Image.Resampling.BILINEAR),  # timm's "random" evaluates bilinear
        tuple(data["mean"]),
        tuple(data["std"]),
        f"timm pretrained_cfg of {name}",
    )

    def fetch(weights_dir: str, download: bool) -> dict:
        try:
            net = timm.create_model(name, pretrained=True, cache_dir=str(Path(weights_dir) / "hf"))
        except OSError as exc:  # no network, or no such file on the hub
            raise ConfigError(
                f"downloading {configured}'s published weights failed ({exc}); start once on a machine that "
                "reaches huggingface.co and copy weights/hf here, or set MODEL_WEIGHTS=<checkpoint path>"
            ) from None
        return net.state_dict()

    # ImageNet-1k's names; other label sets (in22k, ...) get MODEL_LABELS or indices (app.model.loading).
    return Arch(configured, build, preset, Published(f"timm-{name}", ImageNetInfo().label_descriptions(), fetch))
