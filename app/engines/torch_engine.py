"""The torch engine: the network as app.model.infer.optimize left it, on the CPU or a GPU.

CPU fp32 runs the frozen TorchScript graph; bf16/fp16 run under autocast. The only engine
on GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from app.config import Config
from app.model.infer import pick_device


class TorchEngine:
    """A ready-to-run network: `engine(batch) -> float32 logits as numpy`."""

    name = "torch"

    def __init__(self, net: torch.nn.Module, cfg: Config, normalize: Callable[[torch.Tensor], torch.Tensor]):
        self.normalize = normalize  # uint8 batch -> float input, on the device
        self.device = pick_device(cfg.device)
        self.precision = cfg.precision  # what this engine runs (int8 falls back to an fp32 one)
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        if self.device.type == "cpu" and self.dtype is torch.float16:
            raise ValueError("PRECISION=fp16 needs a GPU; on CPU use bf16 or fp32")
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        # A no-op on the CPU, so workers keep sharing the master's weights.
        self.net = net.to(self.device)
        if cfg.onednn_fusion and isinstance(net, torch.jit.ScriptModule) and self.device.type == "cpu":
            # oneDNN Graph fuses conv/add/relu chains of the frozen graph into single kernels.
            # It compiles per input shape, in this process, on the second run of each batch
            # size: warm_up runs them all. Process-wide, so set in the worker, not the master.
            # Opt-in: +10% (ResNet-18) / +21% (ResNet-50) c=8 throughput against ~300 MiB
            # more per worker and RSS growth under mixed traffic (docs/performance.md, "Inference options").
            torch.jit.enable_onednn_fusion(True)

    def _autocast(self):
        if self.dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 NCHW images -> float32 logits."""
        x = self.normalize(batch.to(self.device, non_blocking=True))
        x = x.contiguous(memory_format=self.memory_format)
        with self._autocast():
            out = self.net(x)
        return out.float().cpu().numpy()

    @torch.inference_mode()
    def fp32(self, batch: torch.Tensor) -> np.ndarray:
        """The reference answer: the same network without autocast."""
        return (
            self.net(self.normalize(batch.to(self.device)).contiguous(memory_format=self.memory_format))
            .float()
            .cpu()
            .numpy()
        )

    def warm_up(self, max_batch_size: int, input_size: int) -> None:
        """Run the shapes we will serve so the first real request isn't the slow one.

        Every batch size when there are few (CPU: fused kernels are compiled per shape), else
        the smallest and largest.
        """
        sizes = range(1, max_batch_size + 1) if max_batch_size <= 8 else (1, max_batch_size)
        for n in sizes:
            for _ in range(3):
                self(torch.zeros(n, 3, input_size, input_size, dtype=torch.uint8))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
