"""The side-by-side rows of `make bench`: ours (each engine) against LitServe and the seed-style
baseline, on one machine, in alternating rounds.

- ours: the repo's nginx -> gunicorn_conf.py stack, ENGINE=auto (the default) and ENGINE=torch;
- LitServe 0.2.19 (scripts/peers/litserve_server.py: the same ResNet-18, torchvision
  preprocessing, fp32, 2 workers, its batching at 4), straight to its uvicorn, no nginx;
- the seed-style baseline: seed 001's app under sync `gunicorn -w 2` (scripts/baseline_app.py).
LitServe is installed into bench/peers/litserve (pip --target), never into the project's
venv; its process finds torch in ours. Idle, LitServe's workers poll their queues (about a
third of a core here), so it is paused (SIGSTOP) whenever another server is measured.
All take ab multipart uploads of the same web JPEG.

    python -m scripts.bench_peers IMAGE.jpg      # this part alone
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.loadgen import ab
from scripts.procs import ROOT, free_port, spawn, stack, stop, venv_bin, wait_ready

LITSERVE = "litserve==0.2.19"
PEER_DIR = ROOT / "bench" / "peers" / "litserve"
BASELINE_ARGS = ("-w", "2", "-k", "sync", "scripts.baseline_app:create_app()")
ROUNDS, SECONDS, CONCURRENCY = 3, 6, 8


def install_litserve() -> Path:
    stamp = PEER_DIR / f".{LITSERVE}"
    if not stamp.exists():
        subprocess.run(
            [venv_bin("pip"), "install", "--quiet", "--target", str(PEER_DIR), LITSERVE, "python-multipart"],
            check=True,
        )
        stamp.touch()
    return PEER_DIR


def start_litserve(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {"PYTHONPATH": f"{install_litserve()}:{ROOT}"}
    proc = spawn([venv_bin("python"), "-m", "scripts.peers.litserve_server", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/health", proc, timeout=180)
    except (RuntimeError, TimeoutError):
        stop(proc)
        raise RuntimeError(f"LitServe did not start:\n{log.read_text()[-3000:]}") from None
    return proc, url


@contextlib.contextmanager
def running(proc: subprocess.Popen):
    """The process group resumed for the block, paused (SIGSTOP) after it."""
    os.killpg(proc.pid, signal.SIGCONT)
    time.sleep(0.5)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGSTOP)


def run(image: Path, tmp: Path, ab) -> dict:
    """Medians of ROUNDS alternating runs; `ab(url, image, c, seconds, warm_first)` from scripts.loadgen."""
    base = {"MODEL_ARCH": "resnet18"}
    lit, lit_url = start_litserve(tmp / "litserve.log")
    os.killpg(lit.pid, signal.SIGSTOP)
    samples: dict[str, list[dict]] = {"ours": [], "ours_torch": [], "litserve": [], "baseline": []}
    try:
        with (
            stack(base, tmp / "peers-ours") as ours,
            stack({**base, "ENGINE": "torch"}, tmp / "peers-torch") as torch_only,
            stack({**base, "OMP_NUM_THREADS": "1"}, tmp / "peers-base", BASELINE_ARGS) as baseline,
        ):
            urls = {"ours": ours.url, "ours_torch": torch_only.url, "litserve": lit_url, "baseline": baseline.url}
            for _ in range(ROUNDS):
                for name, url in urls.items():
                    # LitServe's idle workers poll their queues, about a third of a core here:
                    # it is paused while the others are measured, so that burn isn't theirs.
                    with running(lit) if name == "litserve" else contextlib.nullcontext():
                        if not samples[name]:
                            ab(url, image, CONCURRENCY, 3, True)  # warm
                        samples[name].append(ab(url, image, CONCURRENCY, SECONDS, False))
    finally:
        os.killpg(lit.pid, signal.SIGCONT)
        stop(lit)
    medians = {
        name: {key: statistics.median(s[key] for s in runs) for key in ("rps", "p50")} for name, runs in samples.items()
    }
    return {"medians": medians, "samples": samples}


def report(peers: dict) -> list[str]:
    m, smp = peers["medians"], peers["samples"]
    lines = [
        "",
        f"## Side by side: ResNet-18 fp32, web JPEG, ab c={CONCURRENCY}, {ROUNDS} alternating rounds",
        "",
        "| server | req/s per round | median | p50 ms | ours (ENGINE=auto) vs it |",
        "|---|---|---|---|---|",
    ]
    for name, label in (
        ("ours", "ours, ENGINE=auto, through nginx"),
        ("ours_torch", "ours, ENGINE=torch, through nginx"),
        ("litserve", f"LitServe {LITSERVE.split('==')[1]}, 2 workers, batch 4, direct"),
        ("baseline", "seed-style: seed 001's app, sync gunicorn -w 2"),
    ):
        rounds = " / ".join(f"{s['rps']:.1f}" for s in smp[name])
        ratio = m["ours"]["rps"] / m[name]["rps"]
        lines.append(f"| {label} | {rounds} | {m[name]['rps']:.1f} | {m[name]['p50']:.0f} | {ratio:.2f}x |")
    lines += ["", "Targets: >= 1.5x LitServe, >= 1.6x the seed-style baseline (fp32, c=8)."]
    return lines


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), Path(tempfile.mkdtemp(prefix="bench-peers-")), ab)
    print(json.dumps(result["samples"]))
    print("\n".join(report(result)))
