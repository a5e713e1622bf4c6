"""The prepared GPU check's steps (scripts/gpu_check.sh runs each under its own hard timeout).

    python -m scripts.gpu_check prepare|pin|report      python -m scripts.gpu_check bench PRECISION

Steps hand results on as JSON files in GPU_CHECK_WORK; `report` merges them into
GPU_CHECK_OUTDIR/report.md and results.json (docs/deployment.md, "GPU check"). Nothing here
imports torch at module level: `bench` forks load-generator processes, and the master it
starts must be the only thing that decides about CUDA.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Settings:
    dry: bool
    work: Path  # scratch: checkpoint, image, step results, nginx prefixes
    outdir: Path  # what comes back: report, results, logs
    arch: str
    precisions: list[str]
    concurrencies: list[int]
    seconds: int
    gpus: str
    workers_per_gpu: int
    loadgen: str  # auto (ab when installed), ab, python
    nginx: str  # auto (when installed), off

    @classmethod
    def from_env(cls) -> Settings:
        env, dry = os.environ, os.environ.get("GPU_CHECK_DRY_RUN", "0") == "1"
        return cls(
            dry=dry,
            work=Path(env["GPU_CHECK_WORK"]),
            outdir=Path(env["GPU_CHECK_OUTDIR"]),
            arch=env.get("GPU_CHECK_ARCH", "resnet18" if dry else "resnet50"),
            # fp16 is refused on a CPU: the dry run serves fp32 in its place, and bf16 (emulated).
            precisions=env.get("GPU_CHECK_PRECISIONS", "fp32,bf16" if dry else "fp16,bf16").split(","),
            concurrencies=[int(c) for c in env.get("GPU_CHECK_CONCURRENCY", "1,2" if dry else "8,32,64").split(",")],
            seconds=int(env.get("GPU_CHECK_SECONDS", "1" if dry else "5")),
            gpus=env.get("GPU_CHECK_GPUS", "0"),
            workers_per_gpu=int(env.get("GPU_CHECK_WORKERS_PER_GPU", "2")),
            # The dry run rehearses the GPU machine, which has no ab; and ab -t counts only the
            # answers inside its window, none at 1 s when an emulated bf16 answer takes longer.
            loadgen=env.get("GPU_CHECK_LOADGEN", "python" if dry else "auto"),
            nginx=env.get("GPU_CHECK_NGINX", "auto"),
        )

    def server_env(self, precision: str) -> dict[str, str]:
        """gunicorn's environment: GPUS/WORKERS_PER_GPU as a GPU host sets them, DEVICE=auto."""
        env = {
            "MODEL_ARCH": self.arch,
            "MODEL_WEIGHTS": str(self.work / "model.pth"),
            "PRECISION": precision,
            "GPUS": self.gpus,
            "WORKERS_PER_GPU": str(self.workers_per_gpu),
            "DEVICE": "auto",
            "ACCESS_LOG": "/dev/null",
            "GRPC_BIND": "",
            # CUDA's own order is fastest-first; nvidia-smi's indices are PCI order.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        if self.dry:  # two CPU workers on a small machine: batches of 1 (the shortest warm-up:
            # bf16 is emulated, ~1 s an image), one thread each, and the torch engine that GPUs
            # run, without ENGINE=auto's OpenVINO trial at start
            env |= {"MAX_BATCH_SIZE": "1", "TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "ENGINE": "torch"}
        return env


class Checks:
    """PASS/FAIL lines, printed as they happen and kept for the report."""

    def __init__(self) -> None:
        self.lines: list[dict] = []

    def check(self, ok: bool, what: str) -> bool:
        self.lines.append({"ok": bool(ok), "what": what})
        print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)
        return ok


def save(s: Settings, name: str, data: dict) -> None:
    (s.work / f"{name}.json").write_text(json.dumps(data, indent=1))


def load(s: Settings, name: str) -> dict | None:
    path = s.work / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def track(s: Settings, pid: int, kind: str = "pgids") -> None:
    """Record a process group this check started: gpu_check.sh kills what a killed step left.
    gunicorn masters are also listed in `masters`, where the dry run's nvidia-smi looks."""
    for name in {"pgids", kind}:
        with open(s.work / name, "a") as f:
            f.write(f"{pid}\n")


def smi(*args: str) -> str:
    """nvidia-smi's output (the dry run puts scripts/fake_nvidia_smi.py first on PATH)."""
    return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def serve(s: Settings, precision: str, log: Path) -> tuple[subprocess.Popen, str]:
    """gunicorn with the repo's config on a free loopback port, once /ready answers.

    `python -m gunicorn`: on the GPU machine the packages may sit on PYTHONPATH (carried wheels),
    with no console script beside the interpreter for scripts.procs.start_gunicorn to find.
    """
    from scripts.procs import free_port, spawn, stop, wait_ready

    port = free_port()
    env = {**s.server_env(precision), "BIND": f"127.0.0.1:{port}"}
    proc = spawn([sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py", "app:create_app()"], env, log)
    track(s, proc.pid, "masters")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/ready", proc, timeout=300)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        raise RuntimeError(f"gunicorn did not start ({exc}); the end of {log}:\n{log.read_text()[-3000:]}") from None
    return proc, url


def prepare(s: Settings) -> None:
    """What the report says of the machine; a checkpoint of random weights saved as users save
    theirs (as tests/conftest.py makes them); the web JPEG make bench uses (scikit-image's
    coffee, 600x400, quality 90)."""
    import torch
    from PIL import Image
    from torchvision.models import get_model

    with open("/proc/cpuinfo") as f:
        cpuinfo = f.read().splitlines()
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    torch.manual_seed(0)
    state = get_model(s.arch, num_classes=1000).state_dict()
    torch.save(state, s.work / "model.pth")
    try:
        from skimage import data

        picture = Image.fromarray(data.coffee())
    except ImportError:  # scikit-image is a bench tool; the tests' synthetic photo will do
        from scripts.hostile_inputs import photo

        picture = photo()
    picture.resize((600, 400), Image.Resampling.LANCZOS).save(s.work / "web.jpg", "JPEG", quality=90)
    machine = {
        "dry_run": s.dry,
        "nvidia_smi_L": smi("-L").strip(),
        "cpu": next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?"),
        "cores": len(os.sched_getaffinity(0)),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),  # this step's own process, not the servers'
        "nginx": shutil.which("nginx") is not None and s.nginx != "off",
        "ab": shutil.which("ab") is not None,
        "arch": s.arch,
        "weight_bytes": sum(t.numel() * t.element_size() for t in state.values() if t.is_floating_point()),
        "image_bytes": (s.work / "web.jpg").stat().st_size,
    }
    print(json.dumps(machine, indent=1))
    save(s, "prepare", machine)


def main() -> None:
    # timeout(1) sends TERM: unwind, so each step's `finally` stops the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    s, step = Settings.from_env(), sys.argv[1]
    if step == "pin":
        from scripts.gpu_pinning import pin

        pin(s)
    elif step == "bench":
        from scripts.gpu_load import bench

        bench(s, sys.argv[2])
    elif step == "report":
        from scripts.gpu_report import report

        sys.exit(report(s))
    elif step == "prepare":
        prepare(s)


if __name__ == "__main__":
    main()
