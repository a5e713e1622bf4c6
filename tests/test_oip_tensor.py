"""The tensor model (`classifier_tensor`, FP32 NCHW pixels) and gRPC streaming, against the real
stack, driven by the clients people run: Triton's image_client.py flows (tests/clients/
image_flows.py, on tritonclient) and the kserve SDK's own v2 clients.

Answers are compared with the same network run in-process on the same pixels.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import grpc
import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from app.config import ROOT
from app.core.postprocess import activate, top_k
from app.oip.grpc_server import SERVICE, pb
from scripts.hostile_inputs import encode, photo
from tests.conftest import free_port, start_gunicorn, start_nginx, stop
from tests.test_oip import need_clients

MAX_QUEUE = 8
MODES = [("http", "sync"), ("http", "async"), ("grpc", "sync"), ("grpc", "async"), ("grpc", "stream")]


@pytest.fixture(scope="module")
def stack(imagenet_ckpt, tmp_path_factory):
    need_clients()
    work = tmp_path_factory.mktemp("tensor")
    grpc_backend = f"127.0.0.1:{free_port()}"
    env = {
        "MODEL_ARCH": "resnet18",
        "MODEL_WEIGHTS": str(imagenet_ckpt),
        "WORKERS": "2",
        "GRPC_BIND": grpc_backend,
        "MAX_QUEUE": str(MAX_QUEUE),  # small, so a stream can meet the shared bound
    }
    gunicorn, backend = start_gunicorn(env, work / "gunicorn.log")
    grpc_port = free_port()
    try:
        nginx, url = start_nginx(work / "nginx", [backend.removeprefix("http://")], (grpc_port, [grpc_backend]))
        try:
            yield {"http": url.removeprefix("http://"), "grpc": f"127.0.0.1:{grpc_port}", "gunicorn": gunicorn}
        finally:
            stop(nginx)
    finally:
        stop(gunicorn)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, size in enumerate([(640, 480), (300, 500), (1024, 768)]):
        paths.append(folder / f"{i}.jpg")
        paths[-1].write_bytes(encode(photo(size, seed=20 + i), "JPEG", quality=92))
    return paths


def client_pixels(path, size: int = 224) -> np.ndarray:
    """What image_client.py sends: resized (bilinear, no crop), FP32 0-255, CHW."""
    image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return np.transpose(np.array(image).astype(np.float32), (2, 0, 1))


def reference(app, pixels: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """The top k (index, score) of each image, from the same network in-process."""
    clf = app.extensions["classifier"]
    logits = clf.engine(torch.from_numpy(np.rint(pixels).astype(np.uint8)))
    return [[(int(i), float(activate(row, "softmax")[i])) for i in top_k(row, k)] for row in logits]


def run(venv: str, script: str, *args: str) -> dict:
    out = subprocess.run(
        [str(ROOT / venv / "bin" / "python"), str(ROOT / "tests/clients" / script), *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize(("protocol", "mode"), MODES)
def test_image_client_flows_classify_like_the_model(stack, files, app, protocol, mode):
    """image_client.py -m classifier_tensor -c 3 -b 2 [-a | --streaming] over three files: two
    batches (the second refilled from the first file), the top 3 of each image."""
    got = run(".venv-clients", "image_flows.py", protocol, stack[protocol], "classifier_tensor", 3, 2, mode, *files)
    assert got["model"] == {
        "batching": True, "input": "pixels", "output": "scores", "c": 3, "h": 224, "w": 224, "nchw": True,
        "dtype": "FP32",
    }  # fmt: skip
    assert got["errors"] == [] and got["batches"] == 2 and [r["file"] for r in got["rows"]] == [0, 1, 2, 0]
    want = reference(app, np.stack([client_pixels(f) for f in files]), 3)
    for row in got["rows"]:
        parsed = [item.split(":", 2) for item in row["classes"]]
        assert [int(i) for _, i, _ in parsed] == [i for i, _ in want[row["file"]]]
        for (score, _, label), (i, p) in zip(parsed, want[row["file"]], strict=True):
            assert abs(float(score) - p) <= 1e-4 and label == app.extensions["classifier"].model.labels[i]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_image_client_refuses_the_image_model_as_triton_would(stack, files, protocol):
    """Our image model takes encoded files (BYTES [-1, 1]): image_client.py's checks refuse it."""
    got = run(".venv-clients", "image_flows.py", protocol, stack[protocol], "classifier", 1, 1, "sync", files[0])
    assert "expecting input to have 4 dimensions" in got["refused"]


def test_kserve_sdk_clients_drive_both_models(stack, files, app, tmp_path):
    pixels = client_pixels(files[0])[None]
    np.save(tmp_path / "pixels.npy", pixels)
    got = run(".venv-k8s", "kserve_clients.py", f"http://{stack['http']}", stack["grpc"], "classifier", files[0],
              tmp_path / "pixels.npy")  # fmt: skip
    assert got["rest_ready"] and got["grpc_ready"]
    clf = app.extensions["classifier"]
    image_want = clf.scores([files[0].read_bytes()])[0]
    tensor_want = activate(clf.engine(torch.from_numpy(pixels.astype(np.uint8)))[0], "softmax")
    for door in ("rest", "grpc"):
        np.testing.assert_allclose(np.array(got[f"{door}:classifier"][0]), image_want, atol=1e-5)
        np.testing.assert_allclose(np.array(got[f"{door}:classifier_tensor"][0]), tensor_want, atol=1e-5)
    print(f"\nkserve SDK: rest and grpc top-1 {int(np.argmax(tensor_want))} on both models")


def stream_requests(n: int, pixels: np.ndarray, bad: set[int] = frozenset()):
    for i in range(n):
        request = pb.ModelInferRequest(model_name="classifier_tensor", id=f"r{i}")
        tensor = request.inputs.add(name="pixels", datatype="FP32")
        tensor.shape.extend([len(pixels), 3, 224, 224] if i not in bad else [len(pixels), 3, 10, 10])
        request.raw_input_contents.append(pixels.tobytes())
        yield request.SerializeToString()


def open_stream(target: str):
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    method = channel.stream_stream(
        f"/{SERVICE}/ModelStreamInfer", response_deserializer=pb.ModelStreamInferResponse.FromString
    )
    return channel, method


def test_a_stream_answers_in_order_and_goes_on_after_an_error(stack, files):
    channel, method = open_stream(stack["grpc"])
    pixels = client_pixels(files[1])[None]
    answers = list(method(stream_requests(12, pixels, bad={4}), timeout=120))
    channel.close()
    assert [a.infer_response.id for a in answers] == [f"r{i}" for i in range(12)]
    assert "must have shape [N, 3, 224, 224]" in answers[4].error_message
    assert all(
        not a.error_message and a.infer_response.outputs[0].name == "scores" for i, a in enumerate(answers) if i != 4
    )


def test_a_fast_stream_is_held_by_flow_control_not_buffered(stack, files):
    """A client that sends 150 requests (180 MB of pixels) as fast as it can: the worker reads a
    window ahead, gRPC's flow control holds the rest, memory stays flat, and every request is
    answered: a result, or the same overload refusal as any door's."""
    workers = psutil.Process(stack["gunicorn"].pid).children()
    before = sum(w.memory_info().rss for w in workers)
    channel, method = open_stream(stack["grpc"])
    pixels = np.stack([client_pixels(files[2])] * 2)  # batch 2: a window of 4 holds 8 images = MAX_QUEUE
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak.append(sum(w.memory_info().rss for w in workers))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        answers = list(method(stream_requests(150, pixels), timeout=600))
    finally:
        done.set()
        sampler.join()
        channel.close()
    assert len(answers) == 150 and [a.infer_response.id for a in answers] == [f"r{i}" for i in range(150)]
    refused = [a.error_message for a in answers if a.error_message]
    assert all("at capacity (MAX_QUEUE)" in message for message in refused), set(refused)
    growth = (max(peak) - before) / 2**20
    print(f"\nstream of 150 x 2 images: {len(refused)} refused, worker RSS growth {growth:.0f} MiB")
    assert growth < 80  # the 180 MB the client sent never sat in the worker (measured: 34 MiB)


def held_open(first: bytes, release: threading.Event):
    """A stream's messages: one request, then nothing until `release` (a client thinking)."""
    yield first
    release.wait(60)


def test_open_streams_are_capped_and_cancelled_ones_give_their_place_back(stack, files):
    """Each worker takes THREADS // 4 open streams (THREADS = MAX_QUEUE + 2 x MAX_BATCH_SIZE =
    16 here, so 4; 2 workers): of 40 held open, the rest are refused RESOURCE_EXHAUSTED at once;
    cancelling them frees every place."""
    channel, method = open_stream(stack["grpc"])
    first = next(stream_requests(1, client_pixels(files[0])[None]))
    release, calls, codes = threading.Event(), [], []

    def consume(call):
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            codes.append(exc.code())

    threads = []
    for _ in range(40):
        calls.append(method(held_open(first, release), timeout=120))
        threads.append(threading.Thread(target=consume, args=(calls[-1],)))
        threads[-1].start()
    time.sleep(5)
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    for call in calls:
        call.cancel()
    release.set()
    for thread in threads:
        thread.join(30)
    print(f"\n40 streams held open: {refused} refused at once")
    assert refused >= 40 - 2 * ((MAX_QUEUE + 2 * 4) // 4)
    # Every place is back: 40 more streams, each answered, one after another.
    for _ in range(40):
        (answer,) = list(method(iter([first]), timeout=60))
        assert not answer.error_message
    channel.close()


def test_a_lone_stream_of_big_requests_is_held_back_not_refused(stack, files):
    """12 requests of 4 images on an idle server with MAX_QUEUE=8: read ahead by requests
    alone, 4 x 4 images would overflow the queue and the stream would refuse itself every 4th
    request; the stream's image budget (MAX_QUEUE / 2) holds them back instead."""
    channel, method = open_stream(stack["grpc"])
    pixels = np.stack([client_pixels(files[0])] * 4)
    answers = list(method(stream_requests(12, pixels), timeout=300))
    channel.close()
    assert [a.error_message for a in answers] == [""] * 12


def test_an_idle_stream_ends_with_a_deadline_not_internal(stack, files):
    """nginx would reset a stream idle for client_body_timeout, which clients read as INTERNAL;
    the app ends it first (25 s), with a status and a message that say why."""
    channel, method = open_stream(stack["grpc"])
    first = next(stream_requests(1, client_pixels(files[0])[None]))
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in method(held_open(first, release), timeout=120):
            pass
    release.set()
    channel.close()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value
    assert "no request on this stream for 25 s" in caught.value.details()
    assert 24 < time.monotonic() - started < 40
