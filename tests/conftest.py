"""Fixture chain: checkpoints -> config -> app -> client -> helpers; plus real-process helpers.

Tests make their own small checkpoints (random init, saved as users save them) and never reach
the network. ResNet-18 keeps them quick; the loading code is the same for every depth.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import torch
from torchvision.models import get_model

from app import create_app
from app.config import ROOT, Config

# Images and real processes: the helpers are shared with the bench, soak and memory scripts.
from scripts.hostile_inputs import encode, photo  # noqa: F401
from scripts.procs import (  # noqa: F401
    free_port,
    spawn,
    start_gunicorn,
    start_nginx,
    start_redis,
    stop,
    venv_bin,
    wait_ready,
)

VOC_LABELS = str(ROOT / "class_name.json")
CAT, PERSON = 7, 14  # indices in class_name.json


# --- checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def imagenet_ckpt(weights_dir) -> Path:
    """A ResNet-18 with an ImageNet-sized head, saved as a plain state_dict."""
    torch.manual_seed(0)
    path = weights_dir / "r18_1000.pth"
    torch.save(get_model("resnet18", num_classes=1000).state_dict(), path)
    return path


def voc_state(bias: dict[int, float], default: float = -8.0) -> dict:
    """A 20-class ResNet-18 whose head makes chosen classes fire whatever the image."""
    torch.manual_seed(1)
    net = get_model("resnet18", num_classes=20)
    with torch.no_grad():
        net.fc.weight.mul_(0.001)
        net.fc.bias.fill_(default)
        for index, value in bias.items():
            net.fc.bias[index] = value
    return net.state_dict()


@pytest.fixture(scope="session")
def voc_ckpt(weights_dir) -> Path:
    """Multi-label VOC model: Cat (sigmoid ~0.9999) and Person (~0.95) above 0.5, rest ~0."""
    path = weights_dir / "r18_voc.pth"
    torch.save({"epoch": 12, "state_dict": voc_state({CAT: 9.0, PERSON: 3.0})}, path)
    return path


@pytest.fixture(scope="session")
def voc_none_ckpt(weights_dir) -> Path:
    """Multi-label VOC model that sees nothing: every class far below the threshold."""
    path = weights_dir / "r18_voc_none.pth"
    torch.save(voc_state({}), path)
    return path


# --- config -> app -> client -----------------------------------------------------------------


def make_config(weights: Path, **overrides) -> Config:
    base = {"model_arch": "resnet18", "model_weights": str(weights), "max_batch_size": 4, "warmup": False}
    return Config(**(base | overrides)).validated()


@pytest.fixture(scope="session")
def multiclass_app(imagenet_ckpt):
    return create_app(make_config(imagenet_ckpt))


@pytest.fixture(scope="session")
def voc_app(voc_ckpt):
    return create_app(make_config(voc_ckpt, model_labels=VOC_LABELS, model_task="multilabel"))


@pytest.fixture
def app(multiclass_app):
    return multiclass_app


@pytest.fixture
def client(app):
    return app.test_client()


# --- a real server -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server(imagenet_ckpt, tmp_path_factory) -> str:
    """One gunicorn worker with the repo's config, shared by modules that only need it to answer."""
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(imagenet_ckpt), "WORKERS": "1"}
    proc, url = start_gunicorn(env, tmp_path_factory.mktemp("live") / "gunicorn.log")
    yield url
    stop(proc)


# --- the container image ----------------------------------------------------------------------

PODMAN = str(ROOT / "scripts" / "podman.sh")
IMAGE = "localhost/classifier:test"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """podman with the project's own storage and settings (scripts/podman.sh)."""
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, check=check, timeout=timeout)


def missing(message: str) -> None:
    """Something a test needs is absent: skip, except in CI (CI=true), where a skip would hide a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def need(tools: tuple[str, ...], why: str) -> None:
    """Programs on PATH, and root."""
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if os.geteuid() != 0:
        absent.append("root")
    if absent:
        missing(f"{why} needs {', '.join(absent)} (make test installs them as root)")


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> str:
    """The repo's Dockerfile built once per run with podman; later builds reuse its layer cache.

    PyPI's torch (TORCH_VARIANT=cuda) and no baked weights: the tests mount their own.
    """
    need(("podman", "runc", "mmdebstrap"), "building the image")
    log = tmp_path_factory.mktemp("image") / "build.log"
    env = {**os.environ, "IMAGE": IMAGE, "TORCH_VARIANT": "cuda", "FETCH_WEIGHTS": "skip"}
    with open(log, "w") as out:
        built = subprocess.run([str(ROOT / "scripts" / "image.sh")], env=env, stdout=out, stderr=out, timeout=1800)
    assert built.returncode == 0, log.read_text()[-4000:]
    return IMAGE


# --- the whole stack under supervisord ---------------------------------------------------------

SUPERVISORCTL = [venv_bin("supervisorctl"), "-c", str(ROOT / "supervisor.conf")]


def ctl(*args: str) -> str:
    return subprocess.run([*SUPERVISORCTL, *args], capture_output=True, text=True, timeout=60).stdout


@contextlib.contextmanager
def supervisord(env: dict, out: Path):
    """The repo's supervisor.conf in the foreground, as `make serve` runs it, on the real ports
    (which must be free); `out` gets supervisord's own output. Shut down after, also on failure."""
    for port in (8999, 10086):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
    env = {"PATH": f"{os.path.dirname(venv_bin('python'))}:{os.environ['PATH']}", **env}
    proc = spawn([venv_bin("supervisord"), "-n", "-c", str(ROOT / "supervisor.conf")], env, out)
    try:
        yield proc
    finally:
        ctl("shutdown")
        stop(proc)


def metric_samples(text: str) -> dict[str, float]:
    """Every sample in Prometheus text, keyed by its name with labels as written."""
    rows = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in rows}


# --- images ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def jpeg_bytes() -> bytes:
    return encode(photo(), "JPEG", quality=90)


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return encode(photo((320, 480), seed=3), "PNG")


def assert_same_predictions(got: list[dict], want: list[dict], tol: float = 1e-4) -> None:
    """Same classes in the same order, scores within `tol` (batch size changes float rounding)."""
    assert [p["index"] for p in got] == [p["index"] for p in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g["score"] - w["score"]) <= tol, (g, w)


class Load:
    """Clients posting an image to `url`/model_predict until stopped; `record` keeps each outcome."""

    def __init__(self, url: str, data: bytes, clients: int = 4):
        self.url, self.data, self.stopped, self.results = url, data, threading.Event(), []
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def record(self, r: requests.Response) -> tuple:
        return (time.monotonic(), r.status_code, r.headers.get("Content-Type", ""), r.text)

    def run(self):
        while not self.stopped.is_set():
            try:
                r = requests.post(self.url + "/model_predict", files={"image": ("img.jpg", self.data)}, timeout=60)
                self.results.append(self.record(r))
            except requests.RequestException as exc:  # a client-visible failure is data too
                self.results.append((time.monotonic(), None, "", str(exc)))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        for t in self.threads:
            t.join(70)

    def failures(self):
        return [r for r in self.results if r[1] != 200]
