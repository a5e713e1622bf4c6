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

    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False)
    data, tag = resolve_data_config({}, model=net), net.pretrained_cfg.get("tag") or "untagged"
    crop = int(data["input_size"][-1])
    if data["input_size"][-2] != crop:
        raise ConfigError(
            f"MODEL_ARCH={configured!r} takes {data['input_size'][1:]} inputs; only square ones are served"
        )

    def build(num_classes: int, size: int | None = None) -> torch.nn.Module:
        if not size or size == crop:
            return timm.create_model(name, pretrained=False, num_classes=num_classes)
        try:  # fixed-size models (ViTs) take img_size; the others are size-free and refuse it
            return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=size)
        except TypeError:
            return timm.create_model(name, pretrained=False, num_classes=num_classes)

    if data.get("crop_mode", "center") != "center":
        mode = data["crop_mode"]
        raise ConfigError(f"MODEL_ARCH={configured!r}: timm's crop mode {mode!r} isn't served (center only)")
    preset = Preset(
        math.floor(crop / data["crop_pct"]),
        crop,
        FILTERS.get(data["interpolation"], Image.Resampling.BILINEAR),  # timm's "random" evaluates bilinear
        tuple(data["mean"]),
        tuple(data["std"]),
        f"timm pretrained_cfg of {name}",
    )

    def fetch(weights_dir: str) -> dict:
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        try:
            net = timm.create_model(name, pretrained=True, cache_dir=str(Path(weights_dir) / "hf"))
        # No network (OSError), no such file on the hub, or a name timm publishes no weights
        # for ("No pretrained weights exist", a RuntimeError).
        except (OSError, RuntimeError, EntryNotFoundError, HfHubHTTPError) as exc:
            raise ConfigError(
                f"downloading {configured}'s published weights failed ({exc}); start once on a machine that "
                "reaches huggingface.co and copy weights/hf here, or set MODEL_WEIGHTS=<checkpoint path>"
            ) from None
        return net.state_dict()

    # ImageNet-1k's names; other label sets (in22k, ...) get MODEL_LABELS or indices (app.model.loading).
    # The version names the weights: the pretrained tag resolved and timm's release, whose
    # default tag for a bare name can move.
    version = f"{name.split('.')[0]}.{tag}-timm{timm.__version__}"
    return Arch(configured, build, preset, Published(version, ImageNetInfo().label_descriptions(), fetch))
