"""Installing, starting, pausing and stopping the peer servers that `make bench` runs beside ours.

Each peer is pip-installed with --target into bench/peers/<name>, never into the project's
venv, and its process gets PYTHONPATH=<that dir>:<repo>: the dir's copies of what it shares
with our venv (pydantic, starlette, protobuf, numpy...) shadow ours for that process only,
while torch and torchvision come from the venv. Runs in our venv; imports no peer.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import psutil

from scripts.procs import ROOT, free_port, spawn, stop, venv_bin, wait_ready

PEER_ROOT = ROOT / "bench" / "peers"
IDLE_POLL_CORES = 0.02  # idle CPU above this (in cores) counts as polling: paused while others run


class Peer(NamedTuple):
    name: str  # results key and install dir
    label: str  # its report row
    pins: tuple[str, ...]  # pip requirements; the first is the framework and names the stamp
    command: tuple[str, ...]  # after `python`; {port} and {tmp} are filled in
    health: str  # answers 200 once it serves
    env: dict[str, str]  # {tmp} filled in

    @property
    def target(self) -> Path:
        return PEER_ROOT / self.name


PEERS = (
    Peer(
        "litserve",
        "LitServe 0.2.19, 2 workers, batch 4, direct",
        ("litserve==0.2.19", "python-multipart"),
        ("-m", "scripts.peers.litserve_server", "--port", "{port}"),
        "/health",
        {},
    ),
    Peer(
        "bentoml",
        "BentoML 1.4.40, 2 workers, adaptive batch <= 4, direct",
        ("bentoml==1.4.40", "python-multipart"),
        ("-m", "bentoml", "serve", "scripts.peers.bentoml_server:Classifier", "--host", "127.0.0.1")
        + ("--port", "{port}"),
        "/readyz",
        {"BENTOML_HOME": "{tmp}/bentoml-home", "BENTOML_DO_NOT_TRACK": "true"},
    ),
    Peer(
        "rayserve",
        "Ray Serve 2.60.0, 2 replicas, batch 4, its HTTP proxy",
        ("ray[serve]==2.60.0", "python-multipart"),
        ("-m", "scripts.peers.rayserve_server", "--port", "{port}", "--temp-dir", "{tmp}/ray"),
        "/health",
        # Ray writes its cluster token under $HOME/.ray: a private HOME keeps it out of the user's.
        {"HOME": "{tmp}"},
    ),
)


def install(peer: Peer) -> Path:
    stamp = peer.target / f".{peer.pins[0]}"
    if not stamp.exists():
        cmd = [venv_bin("pip"), "install", "--quiet", "--target", str(peer.target), *peer.pins]
        subprocess.run(cmd, check=True)
        stamp.touch()
    return peer.target


class Running(NamedTuple):
    proc: subprocess.Popen
    url: str
    idle_cores: float  # CPU its whole tree burns while nobody calls it

    @property
    def polls(self) -> bool:
        return self.idle_cores > IDLE_POLL_CORES


def tree(proc: subprocess.Popen) -> list[psutil.Process]:
    """The process and all its descendants: BentoML's workers and Ray's actors leave its group."""
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    return []


def idle_cores(proc: subprocess.Popen, seconds: float = 5) -> float:
    def cpu() -> float:
        total = 0.0
        for p in tree(proc):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(p.cpu_times()[:2])
        return total

    before = cpu()
    time.sleep(seconds)
    return (cpu() - before) / seconds


def signal_tree(proc: subprocess.Popen, sig: signal.Signals) -> None:
    for p in tree(proc):
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def start(peer: Peer, tmp: Path, extra_env: dict[str, str]) -> Running:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)  # the peer's own: its log, and what its env points into
    env = {k: v.format(tmp=tmp) for k, v in peer.env.items()}
    env |= {"PYTHONPATH": f"{install(peer)}:{ROOT}", **extra_env}
    cmd = [venv_bin("python"), *(a.format(port=port, tmp=tmp) for a in peer.command)]
    log = tmp / f"{peer.name}.log"
    proc = spawn(cmd, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + peer.health, proc, timeout=300)
    except (RuntimeError, TimeoutError):
        stop_tree(proc)
        raise RuntimeError(f"{peer.name} did not start:\n{log.read_text()[-3000:]}") from None
    time.sleep(5)  # a framework's workers finish starting after its first 200 (BentoML's do)
    return Running(proc, url, idle_cores(proc))


def stop_tree(proc: subprocess.Popen) -> None:
    """Resumed, TERMed as a group (each framework stops its own workers), then anything left KILLed."""
    procs = tree(proc)
    signal_tree(proc, signal.SIGCONT)
    stop(proc)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
