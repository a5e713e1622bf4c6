"""Memory of the whole gunicorn process tree: PSS for 1, 2 and 4 CPU workers, preload on/off.

    .venv/bin/python -m scripts.memory [--arch resnet50] [--out bench/out/memory.md]

PSS (proportional set size, /proc/PID/smaps_rollup) splits each shared page among the
processes that map it, so the sum over the tree is the memory the service really costs.
Each configuration answers a few requests first, so warm-up and first-batch buffers count.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import psutil
import requests
from PIL import Image

from scripts.procs import ROOT, start_gunicorn, stop


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def tree_pss_mib(pid: int) -> float:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(pss_kib(p.pid) for p in procs) / 1024


def measure(
    arch: str, workers: int, preload: bool, image: bytes, logdir: Path, engine: str = "auto"
) -> tuple[float, float]:
    """PSS once every worker is ready (warmed up), and again after serving traffic."""
    env = {
        "MODEL_ARCH": arch,
        "MODEL_WEIGHTS": "random",
        "WORKERS": str(workers),
        "PRELOAD": "1" if preload else "0",
        "ACCESS_LOG": "/dev/null",
        "ENGINE": engine,
    }
    proc, url = start_gunicorn(env, logdir / f"gunicorn-{workers}-{preload}.log")
    try:
        # start_gunicorn waited for /ready (one worker up); wait until every worker is forked.
        deadline = time.monotonic() + 180
        while len(psutil.Process(proc.pid).children()) < workers and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        idle = tree_pss_mib(proc.pid)
        for _ in range(4 * workers):
            requests.post(url + "/model_predict", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)
        time.sleep(1)
        return idle, tree_pss_mib(proc.pid)
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--engine", default="auto", help="ENGINE: auto, torch or openvino")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "memory.md"))
    args = parser.parse_args()
    from torchvision.models import get_model

    weights_mib = sum(t.numel() * t.element_size() for t in get_model(args.arch).state_dict().values()) / 2**20
    buf = io.BytesIO()
    Image.new("RGB", (600, 400), (90, 140, 200)).save(buf, "JPEG")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for preload in (False, True):
        for workers in (1, 2, 4):
            idle, busy = measure(args.arch, workers, preload, buf.getvalue(), Path(args.out).parent, args.engine)
            rows.append((preload, workers, idle, busy))
            print(f"preload={preload} workers={workers} ready={idle:.0f} after traffic={busy:.0f} MiB", flush=True)
    lines = [
        f"PSS of the whole gunicorn tree, {args.arch} on CPU, ENGINE={args.engine} "
        f"(weights: {weights_mib:.0f} MiB fp32).",
        "",
        "| preload | workers | PSS ready (MiB) | per extra worker | PSS after traffic (MiB) | per extra worker |",
        "|---|---|---|---|---|---|",
    ]
    for preload, workers, idle, busy in rows:
        first = next(r for r in rows if r[0] == preload and r[1] == 1)
        per_idle = "" if workers == 1 else f"{(idle - first[2]) / (workers - 1):.0f}"
        per_busy = "" if workers == 1 else f"{(busy - first[3]) / (workers - 1):.0f}"
        kind = "yes" if preload else "no"
        lines.append(f"| {kind} | {workers} | {idle:.0f} | {per_idle} | {busy:.0f} | {per_busy} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
