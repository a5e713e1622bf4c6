"""Model weights: an architecture's published weights (cached under weights/) and user checkpoints.

    python -m app.model.weights fetch resnet50     # download published weights ahead of time
    python -m app.model.weights list               # the torchvision architectures MODEL_ARCH takes

Where published weights come from is the architecture's business (app.model.tv_arch,
app.model.timm_arch); here they and checkpoints become one state_dict for the network.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from app.config import Config, ConfigError
from app.model import checkpoints
from app.model.archs import Arch, resolve


@dataclass
class LoadedWeights:
    arch: Arch
    state_dict: dict | None  # None = random initialisation
    num_classes: int
    source: str  # "imagenet:<published>", "checkpoint:<file name>" or "random"
    version: str = "random"  # which weights: a checkpoint's sha256 (12 hex digits), or the published name + hash
    categories: list[str] | None = None  # the published weights' labels
    script: torch.jit.ScriptModule | None = None  # a TorchScript archive, used as it is

    @property
    def untrained(self) -> bool:
        return self.state_dict is None and self.script is None


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
    arch = resolve(cfg.model_arch)
    if cfg.model_weights == "random":
        return LoadedWeights(arch, None, 1000, "random")
    if cfg.model_weights == "imagenet":
        published = arch.published
        state = published.fetch(cfg.weights_dir)
        classes = arch.num_classes(state)
        categories = published.categories if len(published.categories) == classes else None
        return LoadedWeights(arch, state, classes, f"imagenet:{arch.preset.source}", published.version, categories)
    path = resolve_checkpoint_path(cfg)
    ckpt = checkpoints.read(path)
    version = file_version(path)
    if ckpt.script is not None:
        classes = _script_classes(ckpt.script, cfg.crop_size or arch.preset.crop)
        return LoadedWeights(arch, None, classes, f"torchscript:{path.name}", version, script=ckpt.script)
    state = checkpoints.strip_prefix(ckpt.state_dict, arch.keys, path, arch.name)
    return LoadedWeights(arch, state, arch.num_classes(state), f"checkpoint:{path.name}", version)


def file_version(path: Path) -> str:
    """The first 12 hex digits of the file's sha256: names the weights in every answer."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:12]


def _script_classes(script: torch.jit.ScriptModule, size: int) -> int:
    """Outputs of a TorchScript model: its `fc.weight` when it has one, else one forward pass."""
    weight = dict(script.named_parameters()).get("fc.weight")
    if weight is not None:
        return int(weight.shape[0])
    with torch.inference_mode():
        return int(script(torch.zeros(1, 3, size, size)).shape[-1])


def build_network(cfg: Config, loaded: LoadedWeights) -> torch.nn.Module:
    if loaded.script is not None:
        return loaded.script  # the user's compiled model, served with the configured preprocessing
    net = loaded.arch.build(loaded.num_classes, cfg.crop_size or None)
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
    fetch = sub.add_parser("fetch", help="download an architecture's published weights into weights/")
    fetch.add_argument("arch", help="a MODEL_ARCH value, e.g. resnet50, efficientnet_b0, timm:convnext_tiny.fb_in1k")
    fetch.add_argument("--dir", default=Config().weights_dir)
    sub.add_parser("list", help="the torchvision classification architectures MODEL_ARCH takes")
    args = parser.parse_args(argv)
    if args.command == "list":
        from app.model.tv_arch import names

        print("\n".join(names()))
        return
    arch = resolve(args.arch)
    arch.published.fetch(args.dir)
    print(f"{arch.name}: {arch.published.version} cached under {args.dir}")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
