"""GPU assignment for gunicorn workers, decided in the master without touching CUDA.

CUDA can't be re-initialised in a forked child, so the master never imports torch.cuda: GPUs
are counted from `GPUS` or from the driver's /proc entries. `pick_gpu` runs in `pre_fork` and
balances on the GPUs of the *live* workers; `worker.age % n_gpus` drifts after restarts
because age only grows.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

PROC_GPUS = "/proc/driver/nvidia/gpus"


def list_gpus(spec: str = "", proc_dir: str = PROC_GPUS) -> list[int]:
    """GPU indices to use: `GPUS=0,1`, `GPUS=none`, or every GPU the NVIDIA driver lists."""
    spec = spec.strip()
    if spec.lower() in ("none", "cpu"):
        return []
    if spec:
        try:
            return [int(part) for part in spec.split(",")]
        except ValueError:
            raise ValueError(f"GPUS={spec!r}: use comma-separated indices like 0,1, or 'none'") from None
    try:
        return list(range(len(os.listdir(proc_dir))))
    except OSError:
        return []


def pick_gpu(gpus: list[int], live: Iterable[int | None], per_gpu: int = 0) -> int:
    """The GPU with the fewest live workers (lowest index on ties).

    `live` holds the GPU of each live worker; `per_gpu` > 0 caps workers per GPU.
    """
    if not gpus:
        raise ValueError("pick_gpu needs at least one GPU")
    load = Counter(g for g in live if g is not None)
    gpu = min(gpus, key=lambda g: (load[g], gpus.index(g)))
    if per_gpu and load[gpu] >= per_gpu:
        raise RuntimeError(f"every GPU already runs {per_gpu} workers (WORKERS_PER_GPU)")
    return gpu
