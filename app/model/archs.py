"""Architectures: MODEL_ARCH names any torchvision classification model, or `timm:<name>`.

An `Arch` builds the network for a class count, knows its head (the state_dict keys whose shape
follows the class count, whatever the head is called: `fc`, `classifier.1`, `heads.head`, ...),
and carries the preprocessing and labels its published weights came with. The head is found by
building the network for two class counts on the meta device and comparing shapes, so no
per-architecture table has to be kept up to date.

torchvision architectures are in app.model.tv_arch; timm ones in app.model.timm_arch, imported
only when MODEL_ARCH asks for one (timm is an optional dependency).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from app.config import ConfigError

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class Preset:
    """The preprocessing the architecture's published weights were trained with."""

    resize: int  # shorter side before the center crop
    crop: int
    interpolation: int  # a PIL resampling filter
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # where it came from: logged, and part of the cache key


@dataclass(frozen=True)
class Published:
    """The architecture's published (ImageNet) weights: MODEL_WEIGHTS=imagenet."""

    version: str  # names them in every answer, e.g. IMAGENET1K_V1-f37072fd
    categories: list[str]
    fetch: Callable[[str], dict]  # weights_dir -> state_dict, downloaded on the first start


@dataclass(eq=False)
class Arch:
    name: str  # as MODEL_ARCH spells it
    # (class count, input size or None for the preset's) -> network, randomly initialised. The
    # size matters to fixed-size networks (a ViT's position embedding), not to CNNs.
    build: Callable[..., torch.nn.Module]
    preset: Preset
    published: Published

    @cached_property
    def _shapes(self) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in skeleton(self.build, 1000).items()}

    @cached_property
    def keys(self) -> list[str]:
        """The state_dict's keys, in order."""
        return list(self._shapes)

    @cached_property
    def head(self) -> list[str]:
        """The keys whose shape follows the class count (an Inception's aux head included)."""
        other = skeleton(self.build, 7)
        return [k for k, shape in self._shapes.items() if other[k].shape != shape]

    def num_classes(self, state: dict[str, torch.Tensor]) -> int:
        """A state_dict's class count: the first dimension of its last head tensor."""
        if self.head[-1] not in state:  # e.g. a timm feature extractor, published without a head
            raise ConfigError(f"the weights for MODEL_ARCH={self.name} have no classification head ({self.head[-1]})")
        return int(state[self.head[-1]].shape[0])


def skeleton(build: Callable[[int], torch.nn.Module], num_classes: int) -> dict[str, torch.Tensor]:
    """The network's state_dict, allocated on the meta device where the builder allows it (a
    RegNet computes its widths with tensor ops, which meta tensors have no values for)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # builders' notices about their init defaults
        try:
            with torch.device("meta"):
                return build(num_classes).state_dict()
        except NotImplementedError:
            return build(num_classes).state_dict()


def resolve(name: str) -> Arch:
    """The architecture MODEL_ARCH names; a ConfigError naming the nearest ones otherwise."""
    if name.startswith(TIMM_PREFIX):
        from app.model.timm_arch import timm_arch

        return timm_arch(name, name[len(TIMM_PREFIX) :])
    from app.model.tv_arch import tv_arch

    return tv_arch(name)
