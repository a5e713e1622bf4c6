"""End to end: the real `gunicorn -c gunicorn_conf.py`, checked against the model run right here.

Started once per worker class (gthread, the default, and gevent as seed 001 runs it).
"""

import io
import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import requests
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models import get_model

from tests.conftest import VOC_LABELS, Load, metric_samples, start_gunicorn, stop, venv_bin


def reference_top5(ckpt, image_bytes: bytes) -> list[tuple[int, float]]:
    """The same checkpoint through plain torchvision: eager, fp32, batch of one."""
    net = get_model("resnet18", num_classes=1000)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    net.eval()
    tf = T.Compose(
        [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    with torch.inference_mode():
        probs = net(tf(Image.open(io.BytesIO(image_bytes)).convert("RGB"))[None]).softmax(1)[0]
    scores, idx = probs.topk(5)
    return list(zip(idx.tolist(), scores.tolist(), strict=True))


@pytest.fixture(scope="module", params=["gthread", "gevent"])
def server(request, imagenet_ckpt, tmp_path_factory):
    env = {
        "MODEL_ARCH": "resnet18",
        "MODEL_WEIGHTS": str(imagenet_ckpt),
        "WORKERS": "2",
        "WORKER_CLASS": request.param,
        "MAX_BATCH_SIZE": "4",
    }
    log = tmp_path_factory.mktemp("gunicorn") / f"{request.param}.log"
    env["CONTROL_SOCKET"] = str(log.with_suffix(".ctl"))
    proc, url = start_gunicorn(env, log)
    yield url, log, proc.pid  # proc is the gunicorn master
    stop(proc)


@pytest.mark.parametrize("image", ["jpeg_bytes", "png_bytes"])
def test_answers_match_the_model_run_in_process(server, imagenet_ckpt, image, request):
    url, *_ = server
    data = request.getfixturevalue(image)
    r = requests.post(url + "/model_predict", files={"image": ("img", data)}, timeout=30)
    assert r.status_code == 200, r.text
    got = [(p["index"], p["score"]) for p in r.json()["predictions"]]
    want = reference_top5(imagenet_ckpt, data)
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)


def test_concurrent_load_gets_correct_answers(server, jpeg_bytes, png_bytes):
    url, *_ = server
    images = [jpeg_bytes, png_bytes] * 12

    def post(data):
        return requests.post(url + "/model_predict", files={"image": ("img", data)}, timeout=60)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, images))
    assert all(r.status_code == 200 for r in answers)
    by_image = {}
    for data, r in zip(images, answers, strict=True):
        by_image.setdefault(data, set()).add(tuple(p["index"] for p in r.json()["predictions"]))
    assert all(len(orders) == 1 for orders in by_image.values())


def test_start_up_is_logged_once_with_resolved_settings(server):
    _, log, _ = server
    text = log.read_text()
    assert text.count("settings: bind=") == 1 and "workers=2" in text
    ready = re.findall(r"model ready in pid (\d+): (.*)", text)
    assert len({pid for pid, _ in ready}) == 2  # each worker starts its own copy after fork
    for _, line in ready:
        for field in ("arch=resnet18", "weights=", "labels=", "device=cpu", "precision=fp32", "threads=1"):
            assert field in line, field


def test_every_request_logs_one_json_line_joined_by_its_id(server, jpeg_bytes):
    url, log, _ = server
    ids = [f"join-{i}" for i in range(3)]
    for rid in ids:
        r = requests.post(url + "/model_predict", files={"image": ("a.jpg", jpeg_bytes)}, headers={"X-Request-ID": rid})
        assert r.headers["X-Request-ID"] == rid and r.json()["request_id"] == rid
    r = requests.post(url + "/model_predict", data=b"not an image", headers={"Content-Type": "image/jpeg"})
    generated = r.json()["request_id"]
    time.sleep(0.5)  # log lines are written after the response
    lines = log.read_text().splitlines()
    for rid in [*ids, generated]:
        mine = [json.loads(line) for line in lines if line.startswith("{") and f'"{rid}"' in line]
        assert len(mine) == 1, rid
        assert {"ts", "status", "sizes", "decode_ms", "queue_ms", "infer_ms", "total_ms"} <= set(mine[0])
        assert sum(f"rid={rid}" in line for line in lines) == 1  # gunicorn's access log line
    assert mine[0]["status"] == 400


def test_multilabel_server(voc_ckpt, tmp_path, jpeg_bytes):
    env = {
        "MODEL_ARCH": "resnet18",
        "MODEL_WEIGHTS": str(voc_ckpt),
        "MODEL_LABELS": VOC_LABELS,
        "MODEL_TASK": "multilabel",
        "WORKERS": "1",
    }
    proc, url = start_gunicorn(env, tmp_path / "voc.log")
    try:
        body = requests.post(url + "/model_predict", files={"image": ("a.jpg", jpeg_bytes)}, timeout=30).json()
    finally:
        stop(proc)
    assert body["status"] == 1 and body["result"] == ["Cat", "Person"]


def scrape(url: str) -> dict[str, float]:
    return metric_samples(requests.get(url + "/metrics", timeout=10).text)


OK = 'classifier_http_requests_total{endpoint="/model_predict",status="200"}'


def pids_reporting_memory(samples: dict[str, float]) -> set[str]:
    return {re.search(r'pid="(\d+)"', k).group(1) for k in samples if k.startswith("classifier_process_resident")}


def test_metrics_add_up_over_workers_while_requests_flow(server, jpeg_bytes):
    url, *_ = server
    before = scrape(url)
    sent, scrapes = 40, []

    def post(_):
        r = requests.post(url + "/model_predict", files={"image": ("a.jpg", jpeg_bytes)}, timeout=30)
        return r.status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = pool.map(post, range(sent))
        while len(scrapes) < 5:  # scraping while the requests are in flight must work too
            scrapes.append(scrape(url))
        assert set(statuses) == {200}
    after = scrape(url)
    assert after[OK] - before.get(OK, 0) == sent
    count = "classifier_request_duration_seconds_count"
    assert after[count] - before.get(count, 0) == sent
    assert after["classifier_images_total"] - before.get("classifier_images_total", 0) == sent
    assert all(s[OK] <= after[OK] for s in scrapes)
    assert len(pids_reporting_memory(after)) == 2  # both workers, one series each
    assert after["classifier_queue_depth"] == 0 and after["classifier_in_flight_requests"] == 0


def test_the_control_socket_is_where_it_was_put_and_only_ours(server):
    """CONTROL_SOCKET opts in to gunicorn's control socket, 0600, and gunicornc reads it."""
    _, log, master_pid = server
    ctl = log.with_suffix(".ctl")
    assert ctl.is_socket() and ctl.stat().st_mode & 0o777 == 0o600
    out = subprocess.run([venv_bin("gunicornc"), "-s", str(ctl), "-j", "-c", "show workers"],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    pids = {w["pid"] for w in json.loads(out)["workers"]}
    assert pids == {c.pid for c in psutil.Process(master_pid).children()} and len(pids) == 2


def ready(url: str) -> bool:
    try:  # a busy worker may answer late: that is not the failure looked for
        return requests.get(url + "/ready", timeout=10).ok
    except requests.RequestException:
        return False


def replaced(master: psutil.Process, victim: int, url: str, workers: int = 2) -> None:
    """Waits until the master has `workers` children, `victim` not among them, and /ready answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = [c.pid for c in master.children()]
        if len(live) == workers and victim not in live and ready(url):
            return
        time.sleep(0.25)
    raise AssertionError(f"worker {victim} was not replaced within 60 s")


def test_term_of_a_worker_under_load_loses_no_request(server, jpeg_bytes):
    """SIGTERM (a scale-down, `max_requests`, a reload's old generation) is a graceful stop: the
    worker serves every connection it has accepted. Clients connect afresh per request, as nginx
    does. gunicorn 23's gthread worker reset 3 in 4 such stops; 24+ submits each accepted
    connection to its threads at once and waits for them (why app/runtime/workers.py lost its
    drain code)."""
    url, _, master_pid = server
    master = psutil.Process(master_pid)
    with Load(url, jpeg_bytes, clients=4) as load:
        for _ in range(3):
            time.sleep(1.5)
            victim = master.children()[0].pid
            os.kill(victim, signal.SIGTERM)
            replaced(master, victim, url)
        time.sleep(1)
    assert len(load.results) > 20 and not load.failures(), load.failures()[:3]


def test_a_dead_workers_gauges_go_and_its_restart_is_counted(server, jpeg_bytes):
    """Runs last in this module: it kills a worker."""
    url, _, master_pid = server
    for _ in range(4):
        requests.post(url + "/model_predict", files={"image": ("a.jpg", jpeg_bytes)}, timeout=30)
    before = scrape(url)
    master = psutil.Process(master_pid)
    victim = master.children()[0].pid
    os.kill(victim, signal.SIGKILL)
    replaced(master, victim, url)
    for _ in range(4):  # both workers touch their gauges
        requests.post(url + "/model_predict", files={"image": ("a.jpg", jpeg_bytes)}, timeout=30)
    after = scrape(url)
    assert after["classifier_worker_restarts_total"] == before.get("classifier_worker_restarts_total", 0) + 1
    assert str(victim) not in pids_reporting_memory(after)
    assert after[OK] >= before[OK] + 4  # the dead worker's counts are kept
