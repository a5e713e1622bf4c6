"""JPEG decoders against Pillow, per image on one thread: `python -m scripts.bench_decode`.

Pillow is the served path (app.core.decode.decode_image, draft included). simplejpeg and
PyTurboJPEG decode at the scale Pillow's draft picks, so their pixels can be compared with
Pillow's. Each is timed in thread CPU time alone ("decode": the library call and the header
read it needs) and as the served path would run it ("+ preprocess": Pillow's header for the
guards and EXIF, the scan count, the decode, PIL wrapping, resize/crop to the uint8 tensor).
Methods take turns call by call; the ratio to Pillow is the median of call-by-call ratios.

The optional decoders need not be in the venv: put them on PYTHONPATH. PyTurboJPEG needs
libturbojpeg, which its wheel doesn't carry (2.x wants libjpeg-turbo >= 3.0; Debian 12's
libturbojpeg0 is 2.1.5, for PyTurboJPEG 1.x): --turbojpeg MODULE_FILE=LIBRARY, once per
pair. 1.x and 2.x share the module name `turbojpeg`, so each file loads under its own name.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.config import Config
from app.core.decode import decode_image, jpeg_scans
from app.model.archs import resolve
from app.model.preprocess import build_preprocess
from scripts.bench import jpeg, photographs

LIMIT = 64_000_000
REPEATS = {"web": 10, "phone": 2}  # calls per image per method per round
PILLOW = "Pillow (served)"


def images() -> dict[str, list[bytes]]:
    """scripts/bench.py's sets: web 600x400 q90, phone 4032x3024 q92 with grain."""
    photos = photographs()
    return {"web": [jpeg(p, (600, 400), 90) for p in photos], "phone": [jpeg(p, (4032, 3024), 92, 4) for p in photos]}


def draft_scale(size: tuple[int, int], min_size: int) -> int:
    """The DCT scale denominator Pillow's Image.draft picks (1, 2, 4 or 8)."""
    ratio = min(size[0] // min_size, size[1] // min_size)
    return next(s for s in (8, 4, 2, 1) if ratio >= s)


def decoders(turbojpeg: list[str]) -> dict[str, Callable[[bytes, int], np.ndarray]]:
    """name -> decode(data, scale) returning HWC uint8 RGB."""
    found: dict[str, Callable[[bytes, int], np.ndarray]] = {}
    try:
        import simplejpeg
    except ImportError:
        print("simplejpeg: not importable, skipped")
    else:
        for fast in (False, True):

            def sj(data: bytes, s: int, fast: bool = fast) -> np.ndarray:
                h, w, _, _ = simplejpeg.decode_jpeg_header(data)
                # Asking for Pillow's output size picks exactly its 1/s factor.
                return simplejpeg.decode_jpeg(data, "RGB", fast, fast, -(-h // s), -(-w // s))

            found[f"simplejpeg {simplejpeg.__version__}{' fast' if fast else ''}"] = sj
    for pair in turbojpeg:
        module_file, lib = pair.split("=", 1)
        spec = importlib.util.spec_from_file_location(f"turbojpeg_{len(found)}", module_file)
        tj = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tj)
        handle = tj.TurboJPEG(lib)
        version = re.search(r"so\.[\d.]+$", lib)
        for flags, tag in ((0, ""), (tj.TJFLAG_FASTDCT | tj.TJFLAG_FASTUPSAMPLE, " fast")):

            def t(data: bytes, s: int, flags: int = flags, handle=handle, tj=tj) -> np.ndarray:
                return handle.decode(data, tj.TJPF_RGB, (1, s), flags)

            found[f"PyTurboJPEG {tj.__version__} ({version.group(0) if version else lib}){tag}"] = t
    return found


Methods = dict[str, tuple[Callable[[bytes], object], Callable[[bytes], torch.Tensor]]]


def agreement(methods: Methods, blobs: list[bytes], decode: Callable, full: Callable) -> None:
    """How far each method's decoded pixels and tensor are from the served path's."""
    ref = [np.asarray(decode(d), np.int16) for d in blobs]
    ref_t = [full(d).to(torch.int16) for d in blobs]
    for name, (dec, fin) in methods.items():
        px = [np.abs(np.asarray(dec(d), np.int16) - r) for d, r in zip(blobs, ref, strict=True)]
        tx = [(fin(d).to(torch.int16) - r).abs().numpy() for d, r in zip(blobs, ref_t, strict=True)]
        share = [100 * np.mean([(a > 0).mean() for a in arrays]) for arrays in (px, tx)]
        print(
            f"  {name}: decoded max|diff| {max(int(a.max()) for a in px)}, {share[0]:.2f}% differ; "
            f"tensor max|diff| {max(int(a.max()) for a in tx)}, {share[1]:.2f}% differ"
        )


def timed(methods: Methods, blobs: list[bytes], rounds: int, repeats: int) -> dict[tuple[str, int], list[float]]:
    """Thread CPU ms per call, methods interleaved call by call: each call's ratio is to
    Pillow's call on the same image moments before or after, so others' load cancels."""
    times: dict[tuple[str, int], list[float]] = {(n, stage): [] for n in methods for stage in (0, 1)}
    names = list(methods)
    for r in range(rounds):
        for data in blobs:
            for i in range(repeats):
                turn = (r + i) % len(names)
                for name in names[turn:] + names[:turn]:
                    for stage in (0, 1):
                        t0 = time.thread_time()
                        methods[name][stage](data)
                        times[name, stage].append((time.thread_time() - t0) * 1000)
    return times


def table(kind: str, times: dict[tuple[str, int], list[float]]) -> None:
    print(f"  | {kind} | decode ms | vs Pillow | decode + preprocess ms | vs Pillow |\n  |---|---|---|---|---|")
    for name in dict.fromkeys(n for n, _ in times):
        cells = []
        for stage in (0, 1):
            base = times[PILLOW, stage]
            ratio = statistics.median(t / b for t, b in zip(times[name, stage], base, strict=True))
            cells += [f"{statistics.median(times[name, stage]):.2f}", f"{ratio:.3f}"]
        print(f"  | {name} | " + " | ".join(cells) + " |")


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text()
    flags = sorted({f for f in info.split() if re.fullmatch(r"avx\w*|amx\w*|sse4_2|fma", f)})
    model = re.search(r"model name\s*:\s*(.*)", info)
    return f"{model.group(1) if model else platform.processor()}; flags: {' '.join(flags)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--turbojpeg", action="append", default=[], metavar="MODULE_FILE=LIBRARY")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pre = build_preprocess(
        Config(model_arch="resnet50", model_weights="random").validated(), resolve("resnet50").preset
    )
    m = pre.min_decode_size

    def served(decode: Callable[[bytes, int], np.ndarray]) -> Callable[[bytes], torch.Tensor]:
        def run(data: bytes) -> torch.Tensor:
            # What decode_image would still do around another decoder: Pillow's header for the
            # pixel and aspect guards and EXIF, and the scan count.
            header = Image.open(io.BytesIO(data))
            header.getexif()
            jpeg_scans(data)
            return pre(Image.fromarray(decode(data, draft_scale(header.size, m))))

        return run

    def ours(data: bytes) -> Image.Image:
        return decode_image(data, LIMIT, m)

    methods: Methods = {PILLOW: (ours, lambda d: pre(ours(d)))}
    for name, dec in decoders(args.turbojpeg).items():
        methods[name] = (lambda d, dec=dec: dec(d, draft_scale(Image.open(io.BytesIO(d)).size, m)), served(dec))
    for kind, blobs in images().items():
        print(f"\n{kind}: {Image.open(io.BytesIO(blobs[0])).size}, {np.mean([len(b) for b in blobs]) / 1024:.0f} KB")
        agreement(methods, blobs, *methods[PILLOW])
        table(kind, timed(methods, blobs, args.rounds, REPEATS[kind]))
    print(f"\nCPU: {cpu()}; rounds {args.rounds}; thread CPU time, medians")


if __name__ == "__main__":
    main()
