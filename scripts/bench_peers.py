"""The side-by-side rows of `make bench`: ours (each engine) against LitServe, BentoML, Ray
Serve and the seed-style baseline, on one machine, in alternating rounds.

- ours: the repo's nginx -> gunicorn_conf.py stack, ENGINE=auto (the default) and ENGINE=torch;
- the peers (scripts/peers/harness.py's PEERS): the same ResNet-18, weights, preprocessing and
  top-5 answer (scripts/peers/common.py), 2 workers x 1 torch thread, each framework's own
  batching at 4, straight to its own HTTP server, no nginx; each installed into
  bench/peers/<name> (pip --target), never into the project's venv;
- the seed-style baseline: seed 001's app under sync `gunicorn -w 2` (scripts/baseline_app.py).
A peer whose idle tree burns CPU (LitServe's workers poll their queues, Ray's raylet, GCS and
controller keep time) is paused (SIGSTOP of its whole tree) whenever another server is measured.
All take ab multipart uploads of the same web JPEG. fp32; bf16 rounds too where the CPU has
native bf16 (AVX512-BF16 or AMX); elsewhere bf16 is emulated and is not measured.

    python -m scripts.bench_peers IMAGE.jpg      # this part alone
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.model.infer import cpu_has_bf16
from scripts.loadgen import ab
from scripts.peers.harness import IDLE_POLL_CORES, PEERS, Running, signal_tree, start, stop_tree
from scripts.procs import stack

BASELINE_ARGS = ("-w", "2", "-k", "sync", "scripts.baseline_app:create_app()")
ROUNDS, SECONDS, CONCURRENCY = 3, 6, 8
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_flags() -> dict[str, bool]:
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return {flag: flag in flags for flag in FLAGS}


@contextlib.contextmanager
def measured(peer: Running | None):
    """A polling peer resumed for the block and paused after it; anything else left alone."""
    if peer is None or not peer.polls:
        yield
        return
    signal_tree(peer.proc, signal.SIGCONT)
    time.sleep(0.5)
    try:
        yield
    finally:
        signal_tree(peer.proc, signal.SIGSTOP)


def measure(image: Path, tmp: Path, ab, precision: str) -> dict:
    """Medians of ROUNDS alternating runs; `ab(url, image, c, seconds, warm_first)` from scripts.loadgen."""
    base = {"MODEL_ARCH": "resnet18", "PRECISION": precision}
    peers: dict[str, Running] = {}
    try:
        for peer in PEERS:  # one at a time, each paused once up, so a start doesn't slow another's
            peers[peer.name] = running = start(peer, tmp / f"{peer.name}-{precision}", {"PEER_PRECISION": precision})
            if running.polls:
                signal_tree(running.proc, signal.SIGSTOP)
        with (
            stack(base, tmp / f"ours-{precision}") as ours,
            stack({**base, "ENGINE": "torch"}, tmp / f"torch-{precision}") as torch_only,
            stack({**base, "OMP_NUM_THREADS": "1"}, tmp / f"base-{precision}", BASELINE_ARGS) as baseline,
        ):
            urls = {"ours": ours.url, "ours_torch": torch_only.url, **{n: p.url for n, p in peers.items()}}
            if precision == "fp32":  # the seed has no bf16
                urls["baseline"] = baseline.url
            samples: dict[str, list[dict]] = {name: [] for name in urls}
            for _ in range(ROUNDS):
                for name, url in urls.items():
                    with measured(peers.get(name)):
                        if not samples[name]:
                            ab(url, image, CONCURRENCY, 3, True)  # warm
                        samples[name].append(ab(url, image, CONCURRENCY, SECONDS, False))
    finally:
        for running in peers.values():
            stop_tree(running.proc)
    medians = {
        name: {key: statistics.median(s[key] for s in runs) for key in ("rps", "p50")} for name, runs in samples.items()
    }
    idle = {name: p.idle_cores for name, p in peers.items()}
    return {"medians": medians, "samples": samples, "idle_cores": idle}


def run(image: Path, tmp: Path, ab) -> dict:
    """fp32 at the top level (what bench.py's targets read); "bf16" too where the CPU has native bf16."""
    result = {**measure(image, tmp, ab, "fp32"), "cpu_flags": cpu_flags(), "bf16": None}
    if cpu_has_bf16():
        result["bf16"] = measure(image, tmp, ab, "bf16")
    return result


LABELS = {
    "ours": "ours, ENGINE=auto, through nginx",
    "ours_torch": "ours, ENGINE=torch, through nginx",
    **{p.name: p.label for p in PEERS},
    "baseline": "seed-style: seed 001's app, sync gunicorn -w 2",
}


def table(part: dict, precision: str) -> list[str]:
    m, smp = part["medians"], part["samples"]
    lines = [
        "",
        f"## Side by side: ResNet-18 {precision}, web JPEG, ab c={CONCURRENCY}, {ROUNDS} alternating rounds",
        "",
        "| server | req/s per round | median | p50 ms | idle CPU, cores | ours (ENGINE=auto) vs it |",
        "|---|---|---|---|---|---|",
    ]
    for name in m:
        rounds = " / ".join(f"{s['rps']:.1f}" for s in smp[name])
        idle = part["idle_cores"].get(name)
        paused = " (paused)" if idle is not None and idle > IDLE_POLL_CORES else ""
        idle_cell = "" if idle is None else f"{idle:.2f}{paused}"
        ratio = m["ours"]["rps"] / m[name]["rps"]
        lines.append(
            f"| {LABELS[name]} | {rounds} | {m[name]['rps']:.1f} | {m[name]['p50']:.0f} | {idle_cell} | {ratio:.2f}x |"
        )
    return lines


def report(peers: dict) -> list[str]:
    flags = ", ".join(f"{flag} {'yes' if on else 'no'}" for flag, on in peers["cpu_flags"].items())
    lines = table(peers, "fp32")
    lines += ["", f"CPU flags: {flags}."]
    if peers["bf16"]:
        lines += table(peers["bf16"], "bf16")
    else:
        lines.append("bf16 not measured: no AVX512-BF16 or AMX here, so bf16 would be emulated (slower than fp32).")
    lines += ["", "Targets: >= 1.5x LitServe, >= 1.6x the seed-style baseline (fp32, c=8)."]
    return lines


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), Path(tempfile.mkdtemp(prefix="bench-peers-")), ab)
    print(json.dumps({k: result[k] for k in ("samples", "idle_cores", "cpu_flags")}))
    print("\n".join(report(result)))
