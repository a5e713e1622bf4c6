"""The GPU check's pinning step: gunicorn with WORKERS_PER_GPU workers per GPU, one killed.

Evidence for each claim, from outside the workers: gunicorn's log ("worker P forked, gpu=G",
"worker P ready"), nvidia-smi's compute apps (pid, GPU, used memory), and the app's own
per-worker gauge at /metrics (torch.cuda.memory_allocated; the dry run reads resident memory
instead, as its nvidia-smi does).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.model.gpus import PROC_GPUS, list_gpus, pick_gpu
from scripts.gpu_check import Checks, Settings, load, save, serve, smi
from scripts.procs import stop

FORKED = re.compile(r"worker (\d+) forked, gpu=(\w+)")
READY = re.compile(r"worker (\d+) ready")


def listed_gpus(s: Settings) -> list[int]:
    """The GPUs the driver lists in /proc, as gunicorn_conf.py counts them with GPUS unset; the
    dry run fakes that folder with one entry, as tests/test_gpus.py does."""
    proc_dir = PROC_GPUS
    if s.dry:
        proc_dir = str(s.work / "proc-gpus")
        os.makedirs(os.path.join(proc_dir, "0000:00:00.0"), exist_ok=True)
    return list_gpus("", proc_dir)


def pinned(log: Path, pids: set[int]) -> dict[int, int | None]:
    """pid -> the GPU gunicorn's post_fork pinned it to, for the live, ready workers."""
    text = log.read_text()
    ready = {int(pid) for pid in READY.findall(text)}
    gpus = {int(pid): None if gpu == "none" else int(gpu) for pid, gpu in FORKED.findall(text)}
    return {pid: gpus.get(pid) for pid in pids & ready}


def wait_workers(master: psutil.Process, log: Path, count: int, seconds: float, old: set[int]) -> dict:
    """Wait for `count` live, ready workers none of which is in `old` (the dead)."""
    deadline, now = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        now = pinned(log, {child.pid for child in master.children()} - old)
        if len(now) == count:
            return now
        time.sleep(0.25)
    return now


def gpu_apps() -> dict[int, tuple[int, float]]:
    """pid -> (GPU index, used MiB) from nvidia-smi; MiB is nan where the driver withholds it."""
    rows = smi("--query-gpu=index,uuid", "--format=csv,noheader").splitlines()
    index = {uuid.strip(): int(i) for i, uuid in (row.split(",") for row in rows if row.strip())}
    apps = {}
    for line in smi("--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits").splitlines():
        pid, uuid, used = (part.strip() for part in line.split(","))
        apps[int(pid)] = (index[uuid], float(used) if used.replace(".", "").isdigit() else float("nan"))
    return apps


def app_memory(s: Settings, url: str, pids: set[int], image: bytes, seconds: float = 30) -> dict[int, float]:
    """pid -> bytes the worker reports holding, sending predictions until every pid reported
    (a worker sets its gauge while it serves one)."""
    metric = "classifier_process_resident_memory_bytes" if s.dry else "classifier_gpu_memory_allocated_bytes"
    deadline, seen = time.monotonic() + seconds, {}
    with ThreadPoolExecutor(4) as pool:
        while time.monotonic() < deadline and not pids <= seen.keys():
            post = lambda _: requests.post(url + "/model_predict", files={"image": image}, timeout=30)  # noqa: E731
            list(pool.map(post, range(4)))
            for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
                seen |= {int(x.labels["pid"]): x.value for x in family.samples if x.name == metric}
    return {pid: seen[pid] for pid in pids if pid in seen}


def on_gpu(s: Settings, checks: Checks, url: str, workers: dict[int, int | None], image: bytes) -> None:
    floor = load(s, "prepare")["weight_bytes"] / 2  # autocast keeps fp32 weights; half of them is a safe floor
    apps, held = gpu_apps(), app_memory(s, url, set(workers), image)
    for pid, gpu in sorted(workers.items()):
        gpu_seen, mib = apps.get(pid, (None, 0.0))
        # A sandboxed driver may list no processes at all: then the worker's own figure decides.
        seen = f"nvidia-smi lists it on GPU {gpu_seen} with {mib:.0f} MiB" if apps else "nvidia-smi lists no process"
        checks.check(
            (gpu_seen == gpu or not apps) and held.get(pid, 0) >= floor,
            f"worker {pid} holds the model on GPU {gpu}: {seen}, it reports "
            f"{held.get(pid, 0) / 2**20:.0f} MiB allocated (weights {2 * floor / 2**20:.0f} MiB)",
        )


def pin(s: Settings) -> None:
    checks, gpus = Checks(), list_gpus(s.gpus)
    found, named = listed_gpus(s), smi("-L").strip().splitlines()
    checks.check(found and len(found) == len(named), f"/proc lists {len(found)} GPU(s), nvidia-smi -L {len(named)}")
    image, log = (s.work / "web.jpg").read_bytes(), s.outdir / "gunicorn-pin.log"
    proc, result = None, {"gpus": gpus}
    try:
        proc, url = serve(s, s.precisions[0], log)
        master, count = psutil.Process(proc.pid), len(gpus) * s.workers_per_gpu
        workers = wait_workers(master, log, count, 120, set())
        spread = Counter(workers.values())
        checks.check(
            spread == {g: s.workers_per_gpu for g in gpus},
            f"{len(workers)} workers up, pinned by post_fork as {dict(sorted(workers.items()))} (pid: GPU)",
        )
        on_gpu(s, checks, url, workers, image)
        apps = gpu_apps()  # unverifiable where nvidia-smi lists no process: FAIL, with the reason
        checks.check(
            apps and proc.pid not in apps,
            f"the master {proc.pid} holds no GPU memory (CUDA never started there); nvidia-smi lists {sorted(apps)}",
        )

        victim = min(workers)
        expected = pick_gpu(gpus, [g for pid, g in workers.items() if pid != victim], s.workers_per_gpu)
        os.kill(victim, signal.SIGKILL)
        print(f"killed worker {victim} (GPU {workers[victim]}) with SIGKILL", flush=True)
        started = time.monotonic()
        after = wait_workers(master, log, count, 150, {victim})
        new = sorted(set(after) - set(workers))
        checks.check(
            len(new) == 1 and after[new[0]] == expected,
            f"replacement {new} ready after {time.monotonic() - started:.1f} s on GPU "
            f"{[after[p] for p in new]}, expected {expected} (the GPU with fewer workers)",
        )
        deadline = time.monotonic() + 15  # the driver frees a dead process's memory shortly after
        while victim in gpu_apps() and time.monotonic() < deadline:
            time.sleep(0.5)
        apps = gpu_apps()
        checks.check(
            apps and victim not in apps,
            f"the killed worker {victim} no longer holds GPU memory; nvidia-smi lists {sorted(apps)}",
        )
        checks.check(
            Counter(after.values()) == spread, f"workers per GPU after the restart: {dict(Counter(after.values()))}"
        )
        on_gpu(s, checks, url, after, image)
        result |= {"before": workers, "killed": victim, "after": after}
    finally:  # saved first: a step killed at its cap may not live through the servers' stop
        save(s, "pin", result | {"checks": checks.lines})
        if proc is not None:
            stop(proc)
