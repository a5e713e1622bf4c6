"""PRECISION=int8 against fp32, in process: speed of torch fp32, OpenVINO f32 and OpenVINO
int8 (one thread, batch 4, alternating rounds), and how far int8's answers move.

    .venv/bin/python -m scripts.bench_int8 [ARCH ...] [--subsets 32,100,300] [--rounds 5]

Random weights stand in for trained ones (none can be downloaded here): the head is rescaled
so that logits spread (std 4 over photos), or every answer would be a near tie. Calibration
images are crops of scikit-image's other samples; the answers are compared on the bench's
photos (coffee, chelsea, astronaut, rocket), 8 crops each, which calibration never saw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.config import Config
from app.core.calibration import CalibrationSet
from app.core.service import Classifier
from app.engines import drift, probe_batch
from app.engines.openvino_engine import OpenVINOEngine
from app.engines.torch_engine import TorchEngine
from app.model.archs import resolve
from app.model.loading import load_model
from scripts.bench import photographs


def crops(image: Image.Image, n: int, rng: np.random.Generator) -> list[Image.Image]:
    out = []
    for _ in range(n):
        w, h = image.size
        s = rng.uniform(0.5, 1.0)
        x0, y0 = int(rng.uniform(0, w * (1 - s))), int(rng.uniform(0, h * (1 - s)))
        crop = image.crop((x0, y0, x0 + int(w * s), y0 + int(h * s))).rotate(float(rng.uniform(-15, 15)))
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out


def calibration_dir(path: Path, n: int = 300) -> Path:
    from skimage import data

    sources = [data.hubble_deep_field(), data.immunohistochemistry(), data.retina(), data.colorwheel()]
    sources += list(data.stereo_motorcycle()[:2]) + [np.stack([g] * 3, -1) for g in (data.camera(), data.moon())]
    rng = np.random.default_rng(1)
    for i, image in enumerate(c for s in sources for c in crops(Image.fromarray(s), -(-n // len(sources)), rng)):
        if i < n:
            image.convert("RGB").save(path / f"{i:03d}.jpg", quality=88)
    return path


def decisive_checkpoint(arch: str, path: Path, photos: list[Image.Image]) -> Path:
    """Random weights whose final Linear is rescaled: logits of mean 0, std 4 per class."""
    torch.manual_seed(0)
    cfg = Config(model_arch=arch, model_weights="random", graph="eager", warmup=False).validated()
    model = load_model(cfg)
    net = resolve(arch).build(1000).eval()
    head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits = net(model.preprocess.normalize(torch.stack([model.preprocess(p) for p in photos])))
        mu, scale = logits.mean(0), 4 / logits.std(0)
        head.weight.mul_(scale[:, None])
        head.bias.copy_((head.bias - mu) * scale)
    torch.save(net.state_dict(), path)
    return path


def agreement(got: np.ndarray, want: np.ndarray) -> dict:
    p, q = torch.from_numpy(got).softmax(1), torch.from_numpy(want).softmax(1)
    top5 = [
        len(set(a.topk(5).indices.tolist()) & set(b.topk(5).indices.tolist())) / 5 for a, b in zip(p, q, strict=True)
    ]
    return {
        "top1": float((p.argmax(1) == q.argmax(1)).float().mean()),
        "top5": float(np.mean(top5)),
        "max_softmax_diff": float((p - q).abs().max()),
    }


def speed(engines: dict, batch: torch.Tensor, rounds: int, seconds: float = 2.0) -> dict:
    runs = {name: [] for name in engines}
    for _ in range(rounds):  # alternating: the machine's drift hits every engine alike
        for name, engine in engines.items():
            engine(batch)
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                engine(batch)
                done += len(batch)
            runs[name].append(done / (time.perf_counter() - t0))
    return {name: {"median": statistics.median(r), "rounds": [round(x, 1) for x in r]} for name, r in runs.items()}


def measure(arch: str, subsets: list[int], rounds: int, tmp: Path) -> dict:
    photos = [Image.fromarray(p) for p in photographs()]
    rng = np.random.default_rng(0)
    test = [c for p in photos for c in crops(p, 8, rng)]
    ckpt = decisive_checkpoint(arch, tmp / f"{arch}.pth", photos)
    torch.set_num_threads(1)
    result = {"arch": arch, "int8": {}}
    engines = {}
    for subset in subsets:
        cfg = Config(
            model_arch=arch,
            model_weights=str(ckpt),
            precision="int8",
            engine="openvino",
            calibration_dir=str(tmp / "calibration"),
            calibration_size=subset,
            engine_cache_dir="",
            warmup=False,
        ).validated()
        model = load_model(cfg)
        clf = Classifier(cfg, model)
        if not engines:
            x = torch.stack([clf.prepare(_jpeg(image))[0] for image in test])
            engines["torch fp32"] = TorchEngine(model.net, Config(model_arch=arch), model.preprocess.normalize)
            engines["openvino f32"] = OpenVINOEngine(model.net, cfg, model.preprocess, model.info, 1, "fp32")
            want = engines["torch fp32"].fp32(x)
            probe = probe_batch(4, model.preprocess.input_size)
        started = time.perf_counter()
        int8 = OpenVINOEngine(model.net, cfg, model.preprocess, model.info, 1, "int8", CalibrationSet(cfg, clf.prepare))
        entry = agreement(int8(x), want) | {"build_s": round(time.perf_counter() - started, 1)}
        entry["probe_drift"] = drift(int8(probe), engines["torch fp32"].fp32(probe))
        entry["photo_drift"] = drift(int8(x), want)
        result["int8"][subset] = entry
        engines["openvino int8"] = int8  # the largest subset's is timed
    result["f32_vs_torch"] = agreement(engines["openvino f32"](x), want)
    result["speed"] = speed(engines, x[:4], rounds) if rounds else {}
    return result


def _jpeg(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archs", nargs="*", default=["resnet18", "resnet50"])
    parser.add_argument("--subsets", default="32,100,300")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "calibration").mkdir()
        calibration_dir(Path(tmp) / "calibration")
        for arch in args.archs:
            subsets = [int(s) for s in args.subsets.split(",")]
            print(json.dumps(measure(arch, subsets, args.rounds, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
