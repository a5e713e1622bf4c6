"""The classifiers people fine-tune, each served by real gunicorn from a checkpoint the test
makes, against the same network run here with that architecture's own reference preprocessing
(torchvision's weights transforms, or timm's eval transform): logits, and the multilabel task.

All servers start at once (one module fixture), so the suite pays for one start, not ten.
The multiclass servers run the default ENGINE=auto, so OpenVINO converts each architecture or
the server falls back to torch; the multilabel ones run torch.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import psutil
import pytest
import requests
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.models import get_model_weights

from app.model.archs import resolve
from scripts.hostile_inputs import encode, photo
from scripts.procs import free_port, spawn, stop, venv_bin, wait_ready

CLASSES = 10
# (MODEL_ARCH, how its checkpoint is saved): the forms people have, one per architecture.
ARCHS = [
    ("efficientnet_b0", "lightning"),
    ("convnext_tiny", "safetensors"),
    ("mobilenet_v3_large", "plain"),
    ("vit_b_16", "dataparallel"),
    ("timm:mobilenetv3_small_100.lamb_in1k", "plain"),
]
TASKS = ("multiclass", "multilabel")


def decisive_state(arch: str) -> dict[str, torch.Tensor]:
    """Random weights whose head is rescaled so that each class's logit has mean 0 and std 4
    over a set of probe images: the answers then follow the image (a random network's barely
    do), so a wrong crop or filter shows (test_the_comparison_is_sensitive), and about half the
    classes pass the multilabel threshold."""
    torch.manual_seed(0)
    a = resolve(arch)
    net = a.build(CLASSES).eval()
    transform = reference_transform(arch)
    probes = [photo((300 + 40 * i, 260 + 25 * i), seed=10 + i).rotate(45 * i) for i in range(8)]
    params = dict(net.named_parameters())
    weight, bias = params[a.head[-2]], params[a.head[-1]]  # the final Linear of each ARCHS entry
    with torch.no_grad():
        weight.normal_()  # torchvision's ViT starts its head at zero: every answer would be the bias
        logits = net(torch.stack([transform(image) for image in probes]))
        mu, scale = logits.mean(0), 4 / logits.std(0)
        weight.mul_(scale[:, None])
        bias.copy_((bias - mu) * scale)
    return net.state_dict()


def save(state: dict, form: str, path) -> None:
    if form == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif form == "lightning":
        torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    elif form == "dataparallel":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save(state, path)


def reference_transform(arch: str):
    """The architecture's own eval transform, from its library: not ours."""
    if arch.startswith("timm:"):
        import timm
        from timm.data import create_transform, resolve_data_config

        with torch.device("meta"):
            net = timm.create_model(arch[5:], pretrained=False)
        return create_transform(**resolve_data_config({}, model=net))
    return get_model_weights(arch).DEFAULT.transforms()


class Served:
    def __init__(self, arch: str, task: str, url: str, proc, state: dict):
        self.arch, self.task, self.url, self.proc, self.state = arch, task, url, proc, state

    def predict(self, image: bytes) -> dict:
        r = requests.post(self.url + "/model_predict", files={"image": ("x.png", image)}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    def reference(self, image: bytes) -> np.ndarray:
        net = resolve(self.arch).build(CLASSES).eval()
        net.load_state_dict(self.state)
        x = reference_transform(self.arch)(Image.open(io.BytesIO(image)).convert("RGB"))
        with torch.inference_mode():
            return net(x[None]).numpy()[0]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("archs")
    labels = workdir / "labels.json"
    labels.write_text(json.dumps([f"class{i}" for i in range(CLASSES)]))
    started = []
    try:
        for arch, form in ARCHS:
            state = decisive_state(arch)
            ckpt = workdir / f"{arch.replace(':', '_')}.{'safetensors' if form == 'safetensors' else 'pth'}"
            save(state, form, ckpt)
            for task in TASKS:
                port = free_port()
                env = {
                    "BIND": f"127.0.0.1:{port}",
                    "GRPC_BIND": "",
                    "WORKERS": "1",
                    "TORCH_THREADS": "1",
                    "MODEL_ARCH": arch,
                    "MODEL_WEIGHTS": str(ckpt),
                    "MODEL_LABELS": str(labels),
                    "MODEL_TASK": task,
                    "TOP_K": str(CLASSES),
                    # Raw logits for multiclass: the most sensitive comparison.
                    "ACTIVATION": "none" if task == "multiclass" else "sigmoid",
                    "ENGINE": "auto" if task == "multiclass" else "torch",
                    "ENGINE_CACHE_DIR": str(workdir / "engines"),
                }
                log = workdir / f"{arch.replace(':', '_')}-{task}.log"
                proc = spawn([venv_bin("gunicorn"), "-c", "gunicorn_conf.py", "app:create_app()"], env, log)
                started.append(Served(arch, task, f"http://127.0.0.1:{port}", proc, state))
                started[-1].log = log
        for s in started:
            try:
                wait_ready(s.url + "/ready", s.proc, timeout=600)
            except (RuntimeError, TimeoutError):
                pytest.fail(f"{s.arch} {s.task} did not start:\n{s.log.read_text()[-3000:]}")
        yield {(s.arch, s.task): s for s in started}
    finally:
        for s in started:
            stop(s.proc)


@pytest.fixture(scope="module")
def images():
    """One image that each preset's resize leaves alone (its short side is the resize size),
    so the crops must match pixel for pixel, and one photo of an arbitrary size."""
    return {
        "exact": lambda preset: encode(photo((preset.resize + 37, preset.resize), seed=5), "PNG"),
        "photo": lambda preset: encode(photo((517, 389), seed=6), "PNG"),
    }


def served_logits(answer: dict) -> np.ndarray:
    out = np.full(CLASSES, np.nan)
    for p in answer["predictions"]:
        out[p["index"]] = p["score"]
    return out


@pytest.mark.parametrize("arch", [a for a, _ in ARCHS])
def test_multiclass_logits_equal_the_reference(servers, images, arch):
    s = servers[arch, "multiclass"]
    preset = resolve(arch).preset
    exact = images["exact"](preset)
    got, want = served_logits(s.predict(exact)), s.reference(exact)
    scale = 1 + np.abs(want).max()
    drift = float(np.abs(got - want).max() / scale)
    print(f"\n{arch}: served vs in-process, exact-size image: max |diff| / scale = {drift:.2e}")
    assert drift < 1e-3
    # Any size: our crop-first resampling equals the library's within a pixel level on a few
    # pixels (tests/test_decode.py), which moves logits a little; the ranking holds.
    photo_png = images["photo"](preset)
    got, want = served_logits(s.predict(photo_png)), s.reference(photo_png)
    drift = float(np.abs(got - want).max() / (1 + np.abs(want).max()))
    print(f"{arch}: served vs in-process, 517x389 photo: max |diff| / scale = {drift:.2e}")
    assert drift < 2e-2 and int(np.argmax(got)) == int(np.argmax(want))


@pytest.mark.parametrize("arch", [a for a, _ in ARCHS])
def test_the_comparison_is_sensitive(servers, images, arch):
    """A wrong resize (the ImageNet 256 default of old, or 20 px off) moves the logits by far
    more than the tolerance above: the test above would catch a preset that isn't used."""
    s = servers[arch, "multiclass"]
    preset = resolve(arch).preset
    exact = images["exact"](preset)
    got = served_logits(s.predict(exact))
    image = Image.open(io.BytesIO(exact)).convert("RGB")
    shifted = image.resize((image.width + 20, image.height + 20), Image.Resampling.BILINEAR)
    wrong = s.reference(encode(shifted, "PNG"))
    assert float(np.abs(got - wrong).max() / (1 + np.abs(wrong).max())) > 1e-2


@pytest.mark.parametrize("arch", [a for a, _ in ARCHS])
def test_multilabel_answers_the_classes_above_threshold(servers, images, arch):
    s = servers[arch, "multilabel"]
    image = images["exact"](resolve(arch).preset)
    answer = s.predict(image)
    logits = s.reference(image)
    probs = 1 / (1 + np.exp(-logits))
    want = [int(i) for i in np.argsort(-logits) if probs[i] > 0.5]
    assert [p["index"] for p in answer["predictions"]] == want
    for p in answer["predictions"]:
        assert abs(p["score"] - probs[p["index"]]) < 1e-3
    assert 0 < len(want) < CLASSES, "the test image should light some classes, not all"


def test_memory_per_extra_worker(servers):
    """What one more worker costs: its private memory (USS) once it has answered; the weights
    it shares copy-on-write with the master are not counted again."""
    rows = []
    for (arch, task), s in servers.items():
        if task != "multiclass":
            continue
        workers = psutil.Process(s.proc.pid).children()
        assert len(workers) == 1
        uss = workers[0].memory_full_info().uss / 2**20
        weights = sum(t.numel() * t.element_size() for t in s.state.values()) / 2**20
        chose = re.search(r"model ready in pid \d+: .* engine=(\w+)", s.log.read_text())[1]
        rows.append((arch, weights, uss, chose))
        # OpenVINO compiles its own copy of the weights in each worker; the rest is the
        # runtime's private pages (measured 80-190 MiB on a 2-core AVX2 VM, 2026-12-02).
        assert uss < weights + 400, (arch, uss, weights)
    print("\narch, weights MiB, USS per extra worker MiB, engine")
    for row in rows:
        print(f"{row[0]}, {row[1]:.0f}, {row[2]:.0f}, {row[3]}")
