"""End to end: the real `gunicorn -c gunicorn_conf.py`, checked against the model run right here.

Started once per worker class (gthread, the default, and gevent as seed 001 runs it).
"""

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models import get_model

from tests.conftest import VOC_LABELS, start_gunicorn, stop


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
    proc, url = start_gunicorn(env, log)
    yield url, log
    stop(proc)


@pytest.mark.parametrize("image", ["jpeg_bytes", "png_bytes"])
def test_answers_match_the_model_run_in_process(server, imagenet_ckpt, image, request):
    url, _ = server
    data = request.getfixturevalue(image)
    r = requests.post(url + "/model_predict", files={"image": ("img", data)}, timeout=30)
    assert r.status_code == 200, r.text
    got = [(p["index"], p["score"]) for p in r.json()["predictions"]]
    want = reference_top5(imagenet_ckpt, data)
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)


def test_concurrent_load_gets_correct_answers(server, jpeg_bytes, png_bytes):
    url, _ = server
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
    _, log = server
    text = log.read_text()
    assert text.count("settings: bind=") == 1 and "workers=2" in text
    assert text.count("model ready:") == 2  # each worker starts its own copy after fork


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


def test_metrics_add_up_over_workers(server, jpeg_bytes):
    url, _ = server
    for _ in range(6):
        requests.post(url + "/model_predict", files={"image": ("a.jpg", jpeg_bytes)}, timeout=30)
    text = requests.get(url + "/metrics", timeout=10).text
    served = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('classifier_requests_total{status="200"}')
    )
    assert served >= 6 + 2 + 24  # this test's, the comparison tests' and the load test's
