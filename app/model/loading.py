"""Model loading: network + labels + the preprocessing that matches the weights, on the CPU.

Nothing here runs a forward pass, so it is safe in a gunicorn master before fork.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from app.config import Config, ConfigError
from app.model.infer import optimize
from app.model.preprocess import Preprocess, build_preprocess
from app.model.weights import build_network, load_weights

logger = logging.getLogger(__name__)
OLD_DEFAULT = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")  # MODEL_ARCH's old choices


@dataclass
class LoadedModel:
    net: torch.nn.Module
    labels: list[str]
    preprocess: Preprocess
    info: dict  # what every response reports under "model"


def load_labels(path: str, num_classes: int) -> list[str]:
    """Read seed 001's `{"0": "Aeroplane", ...}` format, or a plain JSON list."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"MODEL_LABELS={path!r}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"MODEL_LABELS={path!r} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        try:
            by_index = {int(k): str(v) for k, v in data.items()}
        except ValueError:
            raise ConfigError(f'MODEL_LABELS={path!r}: keys must be class indices like "0"') from None
        if sorted(by_index) != list(range(len(by_index))):
            raise ConfigError(f"MODEL_LABELS={path!r}: keys must be 0..{len(by_index) - 1} with no gaps")
        data = [by_index[i] for i in range(len(by_index))]
    if not isinstance(data, list):
        raise ConfigError(f"MODEL_LABELS={path!r} must hold a JSON object or list of names")
    if len(data) != num_classes:
        raise ConfigError(
            f"MODEL_LABELS={path!r} has {len(data)} labels but the model has {num_classes} outputs; "
            "use the labels file the checkpoint was trained with"
        )
    return [str(name) for name in data]


def load_model(cfg: Config) -> LoadedModel:
    loaded = load_weights(cfg)
    preprocess = build_preprocess(cfg, loaded.arch.preset)
    net = optimize(build_network(cfg, loaded), cfg, preprocess.input_size)
    if cfg.model_labels:
        labels = load_labels(cfg.model_labels, loaded.num_classes)
    elif loaded.categories is not None:
        labels = list(loaded.categories)
    else:
        logger.warning("no MODEL_LABELS given: answering with class indices as labels")
        labels = [str(i) for i in range(loaded.num_classes)]
    if (
        cfg.model_arch in OLD_DEFAULT
        and not cfg.resize_size
        and loaded.source.startswith(("checkpoint:", "torchscript:"))
    ):
        # Before any architecture was served, a checkpoint got 256/224 bilinear whatever its
        # ResNet; now it gets the architecture's preset, which for resnet50+ is V2's 232/224.
        preset = loaded.arch.preset
        if (preset.resize, preset.crop) != (256, 224):
            logger.warning(
                "checkpoint preprocessing is %s's preset, resize %d / crop %d (before, 256/224): "
                "set RESIZE_SIZE=256 if it was fine-tuned with 256",
                cfg.model_arch,
                preset.resize,
                preset.crop,
            )
    untrained = loaded.untrained
    if untrained:
        logger.warning("MODEL_WEIGHTS=random: serving an UNTRAINED model (smoke-test mode)")
    info = {
        "arch": cfg.model_arch,
        "weights": loaded.source,
        "task": cfg.model_task,
        "activation": cfg.activation_fn,
        "num_classes": loaded.num_classes,
        "untrained": untrained,
        "version": loaded.version,
    }
    return LoadedModel(net, labels, preprocess, info)
