"""The worst images the limits allow, sent to a real worker: its peak memory grows by less than
the stated bound (docs/operations.md, "Memory"), and each is classified or refused, never a 5xx.

Each image is within MAX_IMAGE_PIXELS (64 MP) and MAX_ASPECT_RATIO (100). Before the crop-first
resize and the aspect-ratio limit, a 1,000,000 x 64 PNG took a worker from 850 MiB to 5.9 GiB,
and a 64,000,000 x 1 one was a 500 (OverflowError); those are refused now, before decoding.
"""

from __future__ import annotations

import pytest
import requests

from scripts.hostile_inputs import EXTREME, WORST_ALLOWED, blank_png, float_tiff
from tests.conftest import metric_samples, start_gunicorn, stop

# The stated bound: decode + RGB conversion + preprocessing of one 64 MP image: about
# +480 MiB for RGBA PNGs and +740 MiB for a 32-bit float TIFF in-process, with room for the
# allocator.
BOUND_MIB = 850
CASES = {
    name: (lambda shape=shape: blank_png(*shape)) for name, shape in WORST_ALLOWED.items() if name != "8000x8000-rgb"
}
CASES["8000x8000-float-tiff"] = float_tiff  # rgb above: the cheapest of the PNGs


@pytest.fixture
def worker(tmp_path):
    """A fresh worker per image: the peak gauge is a high-water mark."""
    log = tmp_path / "gunicorn.log"
    proc, url = start_gunicorn({"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": "random", "WORKERS": "1"}, log)
    yield url
    stop(proc)


def peak_bytes(url: str) -> float:
    samples = metric_samples(requests.get(url + "/metrics", timeout=10).text)
    (peak,) = [v for k, v in samples.items() if k.startswith("classifier_process_peak_memory_bytes")]
    return peak


@pytest.mark.parametrize("name", CASES)
def test_the_worst_allowed_image_stays_within_the_bound(worker, name):
    data = CASES[name]()
    requests.post(worker + "/model_predict", files={"image": ("warm.png", blank_png(64, 64))}, timeout=60)
    before = peak_bytes(worker)
    r = requests.post(
        worker + "/model_predict", files={"image": ("worst", data, "application/octet-stream")}, timeout=120
    )
    assert r.status_code == 200, r.text[:300]
    grown = (peak_bytes(worker) - before) / 2**20
    print(f"{name}: {len(data) / 1024:.0f} KiB upload, worker peak +{grown:.0f} MiB")
    assert grown < BOUND_MIB


@pytest.mark.parametrize("name", EXTREME)
def test_extreme_shapes_are_refused_before_decoding(live_server, name):
    r = requests.post(live_server + "/model_predict", files={"image": ("x.png", blank_png(*EXTREME[name]))}, timeout=60)
    assert (r.status_code, r.json()["error"]) == (413, "extreme_aspect_ratio")
    assert "MAX_ASPECT_RATIO" in r.json()["message"]
