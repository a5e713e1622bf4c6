"""Zero-downtime reload with the real stack (supervisord, gunicorn, nginx): new weights are moved
into MODEL_WEIGHTS and `supervisorctl signal HUP our_app` swaps the workers under load.

The two checkpoints answer differently whatever the image (class 7 or class 14 on top), so an
answer's scores say which model made it, and its `version` must say the same.
"""

from __future__ import annotations

import os
import shutil
import time

import psutil
import pytest
import requests
import torch
from torchvision.models import get_model

from app.config import ROOT
from app.model.weights import file_version
from tests import conftest
from tests.conftest import ctl, metric_samples, supervisord, wait_ready

NGINX = "http://127.0.0.1:8999"
TOP = {"a": 7, "b": 14}  # the class each checkpoint puts first


def biased(path, top: int) -> str:
    """A ResNet-18 whose head puts `top` first for any image; returns its version."""
    torch.manual_seed(top)
    net = get_model("resnet18", num_classes=1000)
    with torch.no_grad():
        net.fc.weight.mul_(0.001)
        net.fc.bias.fill_(-4.0)
        net.fc.bias[top] = 6.0
    torch.save(net.state_dict(), path)
    return file_version(path)


def swap_in(folder, source) -> None:
    """The documented way: a new file beside the target, then an atomic rename over it."""
    shutil.copy(source, folder / "incoming.pth")
    os.replace(folder / "incoming.pth", folder / "model.pth")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reload")
    versions = {name: biased(folder / f"{name}.pth", top) for name, top in TOP.items()}
    swap_in(folder, folder / "a.pth")
    return folder, versions


@pytest.fixture(scope="module")
def stack(weights, tmp_path_factory):
    env = {
        "MODEL_ARCH": "resnet18",
        "MODEL_WEIGHTS": str(weights[0] / "model.pth"),
        "WORKERS": "2",
        "GRPC_BIND": os.environ.get("TEST_GRPC_BIND", "127.0.0.1:8011"),
    }
    with supervisord(env, tmp_path_factory.mktemp("sv") / "out") as proc:
        wait_ready(NGINX + "/ready", proc)
        yield proc


class Load(conftest.Load):
    """4 clients through nginx; each answer kept as (time, status, version, top class)."""

    def __init__(self, data: bytes):
        super().__init__(NGINX, data)

    def record(self, r: requests.Response) -> tuple:
        body = r.json()
        top = body["predictions"][0]["index"] if r.status_code == 200 else None
        return (time.monotonic(), r.status_code, body.get("model", {}).get("version"), top)


def serving(version: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        body = requests.get(NGINX + "/ready", timeout=60).json()  # queued while workers swap
        seen.append(body)
        if body.get("model", {}).get("version") == version:
            return True
        time.sleep(0.5)
    raise AssertionError(f"not serving {version}: {seen[-3:]}")


def worker_pids() -> set[int]:
    return {p.pid for p in psutil.Process(int(ctl("pid", "our_app").strip())).children()}


def tree_pss_mib() -> float:
    master = psutil.Process(int(ctl("pid", "our_app").strip()))
    return sum(p.memory_full_info().pss for p in [master, *master.children()]) / 2**20


def assert_consistent(results, versions) -> None:
    by_version = {v: TOP[name] for name, v in versions.items()}
    failed = [r for r in results if r[1] != 200]
    assert failed == [], failed[:5]
    mixed = [r for r in results if by_version.get(r[2]) != r[3]]
    assert mixed == [], mixed[:5]  # every answer's version matches the model that made it


def test_hup_under_load_swaps_models_without_a_failed_request(stack, weights, jpeg_bytes):
    folder, versions = weights
    assert serving(versions["a"], 5)
    before = tree_pss_mib()
    with Load(jpeg_bytes) as load:
        time.sleep(3)
        swap_in(folder, folder / "b.pth")
        hup = time.monotonic()
        assert "signalled" in ctl("signal", "HUP", "our_app")
        assert serving(versions["b"])
        time.sleep(4)
    results = load.results
    assert_consistent(results, versions)
    first_b = min(t for t, _, v, _ in results if v == versions["b"]) - hup
    last_a = max(t for t, _, v, _ in results if v == versions["a"]) - hup
    tail = results[-8:]
    assert all(v == versions["b"] for _, _, v, _ in tail), tail  # only the new model afterwards
    after = tree_pss_mib()
    print(
        f"\nreload: {len(results)} requests, 0 failed; first new answer {first_b:.2f} s after HUP, "
        f"last old answer {last_a:.2f} s after; tree PSS {before:.0f} -> {after:.0f} MiB"
    )
    assert after < before * 1.5  # the new generation shares the master's weights (preload)
    text = requests.get(NGINX + "/metrics", timeout=10).text
    samples = metric_samples(text)
    assert samples['classifier_reloads_total{result="done"}'] >= 1
    assert samples.get("classifier_worker_restarts_total", 0) == 0  # a reload is not a crash
    assert f'version="{versions["a"]}"' not in text  # the old generation's gauges are gone


def test_corrupt_weights_are_refused_and_the_old_model_serves(stack, weights, jpeg_bytes, tmp_path):
    folder, versions = weights
    current = requests.get(NGINX + "/ready", timeout=5).json()["model"]["version"]
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes((folder / "a.pth").read_bytes()[:4000])  # a truncated copy
    workers = worker_pids()
    with Load(jpeg_bytes) as load:
        time.sleep(1)
        swap_in(folder, bad)
        ctl("signal", "HUP", "our_app")
        time.sleep(8)
    assert_consistent(load.results, versions)
    assert {v for _, _, v, _ in load.results} == {current}
    assert worker_pids() == workers  # refused: the old workers were not even replaced
    log = (ROOT / "run" / "our_app.log").read_text()
    assert "reload refused, still serving version " + current in log
    samples = metric_samples(requests.get(NGINX + "/metrics", timeout=10).text)
    assert samples['classifier_reloads_total{result="refused"}'] >= 1


def test_two_hups_in_quick_succession(stack, weights, jpeg_bytes):
    folder, versions = weights
    with Load(jpeg_bytes) as load:
        time.sleep(1)
        swap_in(folder, folder / "a.pth")
        ctl("signal", "HUP", "our_app")
        time.sleep(0.3)
        ctl("signal", "HUP", "our_app")
        assert serving(versions["a"])
        time.sleep(3)
    assert_consistent(load.results, versions)
    assert len(load.results) > 10 and load.results[-1][2] == versions["a"]
    assert "RUNNING" in ctl("status", "our_app")
