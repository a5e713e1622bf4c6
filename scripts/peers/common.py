"""What every peer server in `make bench` shares, so that only the framework differs.

ResNet-18 with seeded random weights (every peer builds the same state_dict), torchvision's
ImageNet preprocessing (resize 256, center crop 224, normalise), softmax, top-5 as JSON. fp32
unless `PEER_PRECISION=bf16` (autocast; the bench asks for it only where the CPU has native bf16).
Imports torch and torchvision only, so it runs under any peer's PYTHONPATH.
"""

from __future__ import annotations

import io
import os

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models import resnet18

SEED = 0
TRANSFORM = T.Compose(
    [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
)


def threads_per_worker(workers: int) -> int:
    """The cores this process may use, shared out between the peer's workers (ours get the same)."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def build_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return resnet18().eval().requires_grad_(False)


def preprocess(data: bytes) -> torch.Tensor:
    return TRANSFORM(Image.open(io.BytesIO(data)).convert("RGB"))


def pil_preprocess(image: Image.Image) -> torch.Tensor:
    return TRANSFORM(image.convert("RGB"))


@torch.inference_mode()
def forward(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Softmax scores for a [N, 3, 224, 224] batch."""
    bf16 = os.environ.get("PEER_PRECISION", "fp32") == "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(batch).float().softmax(1)


def top5(scores: torch.Tensor) -> dict:
    values, idx = scores.topk(5)
    return {"predictions": [{"index": int(i), "score": float(s)} for s, i in zip(values, idx, strict=True)]}
