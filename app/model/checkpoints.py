"""User checkpoints in the forms people really have, loaded without running their code.

- torch.save files, read with `weights_only=True`: a plain state_dict; one under
  `state_dict` / `model` / `model_state_dict` (Lightning's `.ckpt` keeps it under
  `state_dict` beside optimizer states and hyper-parameters);
- `.safetensors` (the Hugging Face hub's format), which holds tensors only;
- a TorchScript archive (`torch.jit.save` of a traced or scripted model), served as it is.

A state_dict's keys may carry one wrapper prefix, whatever its name: `backbone.`, `model.`
(a LightningModule attribute), `module.` (DataParallel), `_orig_mod.` (torch.compile), or
several nested. The prefix is found by matching the keys against the architecture's own,
never from a fixed list.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from app.config import ConfigError

NESTED = ("state_dict", "model", "model_state_dict")


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor] | None = None
    script: torch.jit.ScriptModule | None = None  # a TorchScript archive


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with compiled code (`*/code/`) and `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            # torch's message is a paragraph about weights_only; the cause is its "error:" part.
            tail = str(exc).split("Unpickler error:", 1)[-1].splitlines()
            cause = next((line.strip() for line in tail if line.strip()), "unreadable")
            raise ConfigError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated: {cause})") from None
        found = str(exc).split("Unsupported global: GLOBAL ", 1)[-1].split(" ", 1)[0]
        raise ConfigError(
            f"{path} holds a Python object ({found}) that can't be loaded safely (weights_only=True). "
            "A pickled model: re-save it with torch.save(model.state_dict(), 'weights/model.pth'). "
            "A Lightning checkpoint whose hyper-parameters hold custom classes: re-save its "
            "['state_dict'] the same way (docs/models.md, 'Checkpoint forms')"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not a readable PyTorch checkpoint: {first}") from None


def read(path: Path) -> Checkpoint:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return Checkpoint(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{path} is not a readable safetensors file: {exc}") from None
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, its archives live on
                script = torch.jit.load(str(path), map_location="cpu")
            return Checkpoint(script=script.eval())
        except RuntimeError as exc:
            raise ConfigError(f"{path} is not a loadable TorchScript archive: {exc}") from None
    obj = _torch_load(path)
    if isinstance(obj, dict):
        for key in NESTED:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path} is not a state_dict (a dict of tensors, or one under 'state_dict')")
    return Checkpoint(obj)


def strip_prefix(state: dict[str, torch.Tensor], reference: list[str], path: Path, arch: str) -> dict:
    """The state_dict with its wrapper prefix removed, keeping only the architecture's keys.

    Candidates are what precedes the reference's last key (`fc.weight`...) in the file; the
    one under which every reference key exists wins. Keys outside it (a loss's buffers, a
    second head) are left out.
    """
    anchor = reference[-1]
    candidates = {k[: -len(anchor)] for k in state if k == anchor or k.endswith("." + anchor)}
    scored = sorted(((sum(p + r in state for r in reference), p) for p in candidates), reverse=True)
    if scored and scored[0][0] == len(reference):
        prefix, known = scored[0][1], set(reference)
        # More layers under the prefix than the architecture has: a deeper ResNet whose first
        # blocks happen to fit (resnet34 in a resnet18) would load and answer wrongly.
        extra = sorted(k for k in state if k.startswith(prefix) and k[len(prefix) :] not in known)
        if not extra:
            return {r: state[prefix + r] for r in reference}
        detail = f"it has {len(extra)} keys a {arch} lacks, e.g. {extra[:3]}"
    elif scored:
        hits, prefix = scored[0]
        missing = [r for r in reference if prefix + r not in state][:3]
        detail = f"under the prefix {prefix!r} it has {hits} of {len(reference)} {arch} keys; missing e.g. {missing}"
    else:
        detail = f"no key ends with {anchor!r}; its keys look like {sorted(state)[:3]}"
    raise ConfigError(
        f"{path} doesn't hold a {arch}: {detail}. "
        "Set MODEL_ARCH to the architecture it was trained as (python -m app.model.weights list names them)"
    )
