"""Open Inference Protocol against the real stack, driven by Triton's own clients.

gunicorn (2 workers, each with its gRPC listener on one SO_REUSEPORT port) behind the repo's
nginx: HTTP on its 8999 listener, gRPC on its 8001 listener. tritonclient and perf_analyzer
run from .venv-clients as separate programs (tests/clients/triton.py prints what they got).
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess

import numpy as np
import pytest
import requests

from app.config import ROOT
from app.model.weights import file_version
from tests.conftest import free_port, missing, start_gunicorn, start_nginx, stop

CLIENTS = ROOT / ".venv-clients" / "bin"


def need_clients() -> None:
    if not (CLIENTS / "python").exists() or not (CLIENTS / "perf_analyzer").exists():
        missing("the Triton clients are missing: run scripts/install_tools.sh (make test does)")


@pytest.fixture(scope="module")
def oip_stack(imagenet_ckpt, tmp_path_factory):
    need_clients()
    work = tmp_path_factory.mktemp("oip")
    grpc_backend = f"127.0.0.1:{free_port()}"
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(imagenet_ckpt), "WORKERS": "2", "GRPC_BIND": grpc_backend}
    gunicorn, backend = start_gunicorn(env, work / "gunicorn.log")
    grpc_port = free_port()
    try:
        nginx, url = start_nginx(work / "nginx", [backend.removeprefix("http://")], (grpc_port, [grpc_backend]))
        try:
            yield {"http": url.removeprefix("http://"), "grpc": f"127.0.0.1:{grpc_port}", "log": work / "gunicorn.log"}
        finally:
            stop(nginx)
    finally:
        stop(gunicorn)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, jpeg_bytes, png_bytes):
    folder = tmp_path_factory.mktemp("images")
    paths = {"jpeg": folder / "a.jpg", "png": folder / "b.png", "corrupt": folder / "c.jpg"}
    paths["jpeg"].write_bytes(jpeg_bytes)
    paths["png"].write_bytes(png_bytes)
    paths["corrupt"].write_bytes(jpeg_bytes[: len(jpeg_bytes) // 3])
    return paths


def triton(protocol: str, url: str, *args: str) -> dict:
    out = subprocess.run(
        [str(CLIENTS / "python"), str(ROOT / "tests/clients/triton.py"), protocol, url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_metadata_and_config(oip_stack, protocol, imagenet_ckpt):
    got = triton(protocol, oip_stack[protocol], "probe")
    assert got["live"] and got["ready"] and got["model_ready"]
    assert set(got["server"]["extensions"]) >= {"binary_tensor_data", "classification"}
    meta = got["metadata"]
    assert meta["name"] == "classifier" and meta["versions"] == [file_version(imagenet_ckpt)]  # the weights' sha256
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("image", "BYTES", [-1, 1])
    ]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["outputs"]] == [
        ("scores", "FP32", [-1, 1000])
    ]
    config = got["config"].get("config", got["config"])  # gRPC wraps it in ModelConfigResponse
    assert int(config["max_batch_size"]) == 32 and config["input"][0]["data_type"] == "TYPE_STRING"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batch_of_jpeg_and_png_scores_like_the_model_in_process(oip_stack, protocol, image_files, app):
    got = triton(protocol, oip_stack[protocol], "infer", "5", str(image_files["jpeg"]), str(image_files["png"]))
    clf = app.extensions["classifier"]
    want = clf.scores([image_files["jpeg"].read_bytes(), image_files["png"].read_bytes()])
    np.testing.assert_allclose(np.array(got["scores"]), np.stack(want), atol=1e-5)
    assert np.array(got["scores"]).shape == (2, 1000)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classification_equals_model_predict(oip_stack, protocol, image_files):
    got = triton(protocol, oip_stack[protocol], "infer", "5", str(image_files["jpeg"]))["classes"][0]
    with open(image_files["jpeg"], "rb") as f:
        r = requests.post(f"http://{oip_stack['http']}/model_predict", files={"image": f}, timeout=60)
    want = r.json()["predictions"]
    parsed = [item.split(":", 2) for item in got]
    assert [int(i) for _, i, _ in parsed] == [p["index"] for p in want]
    assert [label for _, _, label in parsed] == [p["label"] for p in want]
    for (score, _, _), p in zip(parsed, want, strict=True):
        assert abs(float(score) - p["score"]) <= 1e-4


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_file_as_uint8(oip_stack, protocol, image_files, app):
    got = triton(protocol, oip_stack[protocol], "uint8", str(image_files["jpeg"]))
    want = app.extensions["classifier"].scores([image_files["jpeg"].read_bytes()])
    np.testing.assert_allclose(np.array(got["scores"][0]), want[0], atol=1e-5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_corrupt_image_in_the_batch_is_a_client_error(oip_stack, protocol, image_files):
    got = triton(protocol, oip_stack[protocol], "infer", "1", str(image_files["jpeg"]), str(image_files["corrupt"]))
    assert "image 2 of 2" in got["error"] and "corrupt" in got["error"]
    assert got["status"] == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")


def test_json_form_with_curl(oip_stack, jpeg_bytes):
    body = {
        "id": "curl-1",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": [base64.b64encode(jpeg_bytes).decode()]}
        ],
        "outputs": [{"name": "scores", "parameters": {"classification": 3}}],
    }
    out = subprocess.run(
        ["curl", "-s", "-H", "Content-Type: application/json", "-d", "@-",
         f"http://{oip_stack['http']}/v2/models/classifier/infer"],
        input=json.dumps(body), capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    answer = json.loads(out)
    assert answer["id"] == "curl-1" and answer["model_name"] == "classifier"
    assert answer["outputs"][0]["shape"] == [1, 3] and len(answer["outputs"][0]["data"]) == 3


def perf_analyzer(protocol: str, url: str, data_file, concurrency: str) -> str:
    out = subprocess.run(
        [str(CLIENTS / "perf_analyzer"), "-m", "classifier", "-u", url, "-i", protocol, "--input-data", str(data_file),
         "--concurrency-range", concurrency, "--measurement-interval", "1500", "--stability-percentage", "100",
         "--max-trials", "3"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_perf_analyzer_drives_both_protocols(oip_stack, protocol, jpeg_bytes, tmp_path):
    # perf_analyzer's --input-data: a BYTES element is base64 of its 4-byte length + the file.
    data = tmp_path / "input.json"
    element = base64.b64encode(struct.pack("<I", len(jpeg_bytes)) + jpeg_bytes).decode()
    data.write_text(json.dumps({"data": [{"image": {"b64": element}}]}))
    report = perf_analyzer(protocol, oip_stack[protocol], data, "1:8:7")
    rows = [line for line in report.splitlines() if line.startswith("Concurrency:")]
    assert [row.split(",")[0] for row in rows] == ["Concurrency: 1", "Concurrency: 8"], report
    assert all(float(row.split("throughput: ")[1].split()[0]) > 0 for row in rows)
    print(f"\nperf_analyzer {protocol}: " + " | ".join(rows))


def test_metrics_count_each_protocol(oip_stack, image_files):
    triton("grpc", oip_stack["grpc"], "uint8", str(image_files["jpeg"]))
    text = requests.get(f"http://{oip_stack['http']}/metrics", timeout=10).text
    assert 'endpoint="grpc:ModelInfer",status="OK"' in text
    assert 'endpoint="/v2/models/<name>/infer",status="200"' in text


def test_unknown_model_over_grpc(oip_stack, image_files):
    code = (
        "import sys, tritonclient.grpc as g\n"
        "c = g.InferenceServerClient(sys.argv[1])\n"
        "try:\n    c.get_model_metadata('nope')\nexcept Exception as e:\n    print(e.status(), e.message())"
    )
    out = subprocess.run([str(CLIENTS / "python"), "-c", code, oip_stack["grpc"]], capture_output=True, text=True)
    assert "NOT_FOUND" in out.stdout and "unknown model 'nope'" in out.stdout, out.stdout + out.stderr


def test_our_proto_matches_tritonclients_on_the_wire():
    """Every message, field and method of inference.proto as tritonclient's own stubs define it.

    Compared across processes: both define `inference.*`, and one descriptor pool can't hold
    two ("duplicate symbol inference.ServerLiveRequest").
    """
    from app.oip.grpc_server import pb
    from tests.clients.descriptors import dump

    need_clients()
    out = subprocess.run(
        [str(CLIENTS / "python"), str(ROOT / "tests/clients/descriptors.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs, ours = json.loads(out.stdout), dump([pb.DESCRIPTOR])
    for name, fields in ours["messages"].items():
        assert name in theirs["messages"], name
        for field, spec in fields.items():
            assert theirs["messages"][name].get(field) == spec, (name, field, spec, theirs["messages"][name].get(field))
    for method, types in ours["methods"].items():
        assert theirs["methods"][method] == types, method
    assert len(ours["methods"]) == 8  # with ModelStreamInfer


def test_grpc_under_gevent_workers(imagenet_ckpt, image_files, tmp_path, app):
    """gevent workers too: grpc's threads are made to cooperate with the hub (init_gevent)."""
    need_clients()
    grpc_bind = f"127.0.0.1:{free_port()}"
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(imagenet_ckpt), "WORKERS": "1", "WORKER_CLASS": "gevent"}
    proc, _ = start_gunicorn({**env, "GRPC_BIND": grpc_bind}, tmp_path / "gunicorn.log")
    try:
        got = triton("grpc", grpc_bind, "infer", "3", str(image_files["jpeg"]), str(image_files["png"]))
    finally:
        stop(proc)
    want = app.extensions["classifier"].scores([image_files["jpeg"].read_bytes(), image_files["png"].read_bytes()])
    np.testing.assert_allclose(np.array(got["scores"]), np.stack(want), atol=1e-5)
