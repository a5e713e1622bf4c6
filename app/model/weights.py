"""Model weights: torchvision's published weights (cached under weights/) and user checkpoints.

    python -m app.model.weights fetch resnet50     # download ImageNet weights ahead of time

The download goes through torchvision's weights API (`Weights.get_state_dict`), which checks
the file's hash; `TORCH_HOME` is pointed at `weights/` so the cache lives with the project.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torchvision.models import WeightsEnum, get_model, get_model_weights

from app.config import ARCHS, Config, ConfigError
from app.model import checkpoints


@dataclass
class LoadedWeights:
    state_dict: dict | None  # None = random initialisation
    num_classes: int
    source: str  # "imagenet:<enum name>", "checkpoint:<file name>" or "random"
    version: str = "random"  # which weights: a checkpoint's sha256 (12 hex digits), or enum name + hash
    tv_weights: WeightsEnum | None = None  # torchvision weights, which carry transforms + labels
    script: torch.jit.ScriptModule | None = None  # a TorchScript archive, used as it is

    @property
    def untrained(self) -> bool:
        return self.state_dict is None and self.script is None


def imagenet_weights(arch: str) -> WeightsEnum:
    return get_model_weights(arch).DEFAULT


def cached_path(weights_dir: str, weights: WeightsEnum) -> Path:
    """Where torch.hub keeps the file once TORCH_HOME=weights_dir."""
    return Path(weights_dir) / "hub" / "checkpoints" / os.path.basename(weights.url)


def fetch_imagenet(arch: str, weights_dir: str, download: bool = True) -> dict:
    weights = imagenet_weights(arch)
    path = cached_path(weights_dir, weights)
    if not path.exists() and not download:
        raise ConfigError(
            f"ImageNet weights for {arch} are not cached at {path}; "
            f"run `python -m app.model.weights fetch {arch}` on a machine with internet access"
        )
    os.environ["TORCH_HOME"] = weights_dir  # torch.hub resolves its cache from this
    try:
        return weights.get_state_dict(progress=False)
    except URLError as exc:  # no network, DNS, proxy: urllib's 40-line traceback says only that
        raise ConfigError(
            f"downloading ImageNet weights for {arch} from {weights.url} failed ({exc.reason}); "
            f"run `python -m app.model.weights fetch {arch}` on a connected machine and copy weights/ here, "
            "or set MODEL_WEIGHTS=random to try the server, or MODEL_WEIGHTS=<checkpoint path>"
        ) from None


def resolve_checkpoint_path(cfg: Config) -> Path:
    path = Path(cfg.model_weights)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(cfg.weights_dir) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"MODEL_WEIGHTS={cfg.model_weights!r}: no such checkpoint (looked at {tried}). "
        "Use 'imagenet', 'random', or a path to a .pth file under weights/"
    )


def load_weights(cfg: Config) -> LoadedWeights:
    if cfg.model_weights == "random":
        return LoadedWeights(None, 1000, "random")
    if cfg.model_weights == "imagenet":
        tv = imagenet_weights(cfg.model_arch)
        state = fetch_imagenet(cfg.model_arch, cfg.weights_dir, download=True)
        version = f"{tv.name}-{Path(tv.url).stem.rsplit('-', 1)[-1]}"  # IMAGENET1K_V2-11ad3fa6: the file's hash
        return LoadedWeights(state, len(tv.meta["categories"]), f"imagenet:{tv}", version, tv)
    path = resolve_checkpoint_path(cfg)
    ckpt = checkpoints.read(path)
    version = file_version(path)
    if ckpt.script is not None:
        classes = _script_classes(ckpt.script, cfg)
        return LoadedWeights(None, classes, f"torchscript:{path.name}", version, script=ckpt.script)
    with torch.device("meta"):  # the architecture's key names, without allocating weights
        reference = list(get_model(cfg.model_arch, weights=None).state_dict())
    state = checkpoints.strip_prefix(ckpt.state_dict, reference, path, cfg.model_arch)
    return LoadedWeights(state, int(state["fc.weight"].shape[0]), f"checkpoint:{path.name}", version)


def file_version(path: Path) -> str:
    """The first 12 hex digits of the file's sha256: names the weights in every answer."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:12]


def _script_classes(script: torch.jit.ScriptModule, cfg: Config) -> int:
    """Outputs of a TorchScript model: its `fc.weight` when it has one, else one forward pass."""
    weight = dict(script.named_parameters()).get("fc.weight")
    if weight is not None:
        return int(weight.shape[0])
    with torch.inference_mode():
        return int(script(torch.zeros(1, 3, cfg.crop_size, cfg.crop_size)).shape[-1])


def build_network(cfg: Config, loaded: LoadedWeights) -> torch.nn.Module:
    if loaded.script is not None:
        return loaded.script  # the user's compiled model, served with the configured preprocessing
    net = get_model(cfg.model_arch, weights=None, num_classes=loaded.num_classes)
    if loaded.state_dict is not None:
        try:
            net.load_state_dict(loaded.state_dict)
        except RuntimeError as exc:
            first = str(exc).splitlines()[:3]
            raise ConfigError(
                f"weights {loaded.source} don't fit MODEL_ARCH={cfg.model_arch}: {' '.join(first)} "
                "Set MODEL_ARCH to the architecture the checkpoint was trained with."
            ) from None
    return net.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.model.weights", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download torchvision's ImageNet weights into weights/")
    fetch.add_argument("arch", choices=ARCHS)
    fetch.add_argument("--dir", default=Config().weights_dir)
    args = parser.parse_args(argv)
    fetch_imagenet(args.arch, args.dir)
    print(cached_path(args.dir, imagenet_weights(args.arch)))


if __name__ == "__main__":
    main()
