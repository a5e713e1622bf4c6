"""torchvision classification models: every name `torchvision.models.list_models` gives for
the classification module (ResNet, EfficientNet, ConvNeXt, MobileNet, RegNet, ViT, Swin, ...).

Each one's default weights entry carries its eval preset (resize, crop, interpolation,
mean/std) and categories as metadata, read without a download. The published weights are
downloaded through torchvision's weights API (`Weights.get_state_dict`), which checks the
file's hash; `TORCH_HOME` is pointed at `weights/` so the cache lives with the project.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from urllib.error import URLError

import torch
import torchvision.models
from torchvision.models import WeightsEnum, get_model, get_model_weights, list_models
from torchvision.transforms.functional import pil_modes_mapping

from app.config import ConfigError
from app.model.archs import Arch, Preset, Published

# What torchvision's builders change when they load published weights, so that a network built
# without them matches a checkpoint fine-tuned from them: these two take ImageNet-normalised
# input and re-scale it inside, and GoogLeNet drops its training-only aux heads.
AS_PUBLISHED = {
    "googlenet": {"transform_input": True, "aux_logits": False, "init_weights": False},
    "inception_v3": {"transform_input": True, "init_weights": False},
}


# Networks built for one input size: torchvision sizes them from the weights it loads (vit_h_14's
# default is 518 px), so without weights they must be told, the preset's crop or CROP_SIZE.
SIZED = {"vit_": lambda size: {"image_size": size}, "maxvit_": lambda size: {"input_size": (size, size)}}


def names() -> list[str]:
    return list_models(module=torchvision.models)  # classification only: not detection, video, ...


def tv_arch(name: str) -> Arch:
    known = names()
    if name not in known:
        near = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ConfigError(
            f"MODEL_ARCH={name!r} is not a torchvision classification model; {hint}"
            "`python -m app.model.weights list` names them all; timm:<name> serves a timm model"
        )
    weights = get_model_weights(name).DEFAULT
    t = weights.transforms()  # built from metadata: no download
    crop = int(t.crop_size[0])
    resample = pil_modes_mapping[t.interpolation]
    preset = Preset(int(t.resize_size[0]), crop, resample, tuple(t.mean), tuple(t.std), str(weights))
    kwargs = AS_PUBLISHED.get(name, {})
    sized = next((arg for prefix, arg in SIZED.items() if name.startswith(prefix)), None)

    def build(num_classes: int, size: int | None = None) -> torch.nn.Module:
        extra = sized(size or crop) if sized else {}
        return get_model(name, weights=None, num_classes=num_classes, **kwargs, **extra)

    version = f"{weights.name}-{Path(weights.url).stem.rsplit('-', 1)[-1]}"  # IMAGENET1K_V2-11ad3fa6: the file's hash
    fetch = lambda weights_dir: fetch_imagenet(name, weights, weights_dir)  # noqa: E731
    return Arch(name, build, preset, Published(version, list(weights.meta["categories"]), fetch))


def cached_path(weights_dir: str, weights: WeightsEnum) -> Path:
    """Where torch.hub keeps the file once TORCH_HOME=weights_dir."""
    return Path(weights_dir) / "hub" / "checkpoints" / os.path.basename(weights.url)


def fetch_imagenet(arch: str, weights: WeightsEnum, weights_dir: str) -> dict:
    os.environ["TORCH_HOME"] = weights_dir  # torch.hub resolves its cache from this
    try:
        return weights.get_state_dict(progress=False)  # the cached file when there is one
    except URLError as exc:  # no network, DNS, proxy: urllib's 40-line traceback says only that
        raise ConfigError(
            f"downloading ImageNet weights for {arch} from {weights.url} failed ({exc.reason}); "
            f"run `python -m app.model.weights fetch {arch}` on a connected machine and copy weights/ here, "
            "or set MODEL_WEIGHTS=random to try the server, or MODEL_WEIGHTS=<checkpoint path>"
        ) from None
