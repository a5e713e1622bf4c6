"""Model weights: torchvision's published weights (cached under weights/) and user checkpoints.

    python -m app.weights fetch resnet50     # download ImageNet weights ahead of time

The download goes through torchvision's weights API (`Weights.get_state_dict`), which checks
the file's hash; `TORCH_HOME` is pointed at `weights/` so the cache lives with the project.
"""

from __future__ import annotations

import argparse
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import WeightsEnum, get_model, get_model_weights

from app.config import ARCHS, Config, ConfigError


@dataclass
class LoadedWeights:
    state_dict: dict | None  # None = random initialisation
    num_classes: int
    source: str  # "imagenet:<enum name>", "checkpoint:<file name>" or "random"
    tv_weights: WeightsEnum | None = None  # torchvision weights, which carry transforms + labels


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
            f"run `python -m app.weights fetch {arch}` on a machine with internet access"
        )
    os.environ["TORCH_HOME"] = weights_dir  # torch.hub resolves its cache from this
    return weights.get_state_dict(progress=False)


def read_checkpoint(path: Path) -> dict:
    """Load a user's checkpoint safely and unwrap the layouts people really save."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # weights_only met a class: a pickled model
            raise ConfigError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
        raise ConfigError(
            f"{path} holds a pickled model object, which can't be loaded safely (weights_only=True). "
            "Re-save it as a state_dict: torch.save(model.state_dict(), 'weights/model.pth')"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise ConfigError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path} is not a state_dict (a dict of tensors, or one under 'state_dict')")
    # DataParallel / DistributedDataParallel save every key with a "module." prefix.
    return {k.removeprefix("module."): v for k, v in obj.items()}


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
        return LoadedWeights(state, len(tv.meta["categories"]), f"imagenet:{tv}", tv)
    path = resolve_checkpoint_path(cfg)
    state = read_checkpoint(path)
    if "fc.weight" not in state:
        raise ConfigError(f"{path} has no 'fc.weight': it is not a torchvision ResNet checkpoint")
    return LoadedWeights(state, int(state["fc.weight"].shape[0]), f"checkpoint:{path.name}")


def build_network(cfg: Config, loaded: LoadedWeights) -> torch.nn.Module:
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
    parser = argparse.ArgumentParser(prog="python -m app.weights", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download torchvision's ImageNet weights into weights/")
    fetch.add_argument("arch", choices=ARCHS)
    fetch.add_argument("--dir", default=Config().weights_dir)
    args = parser.parse_args(argv)
    fetch_imagenet(args.arch, args.dir)
    print(cached_path(args.dir, imagenet_weights(args.arch)))


if __name__ == "__main__":
    main()
