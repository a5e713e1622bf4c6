"""The image as users run it: built from the Dockerfile with podman, run, probed and faulted.

    docker run -p 8999:8999 -v ckpt:/weights/model.pth:ro -e MODEL_WEIGHTS=/weights/model.pth image

Each test runs twice: as the `docker run` of docs/deployment.md, "Docker", and with a read-only
root filesystem where only /srv/run and /tmp are writable (Kubernetes' readOnlyRootFilesystem). Networking is
slirp4netns with the port published on loopback: no bridge or iptables rules are left behind.
"""

from __future__ import annotations

import io
import os
import time

import pytest
import requests

from tests.conftest import assert_same_predictions, encode, photo, podman
from tests.test_oip import need_clients, triton

URL = "http://127.0.0.1:8999"
CTL = ("supervisorctl", "-c", "/srv/supervisor.conf")
MODES = {
    "docker-run": [],
    # podman's `U` chowns the tmpfs to the image's user, as an emptyDir is writable in a pod.
    "read-only": ["--read-only", "--tmpfs", "/srv/run:rw,U", "--tmpfs", "/tmp:rw"],
}


def wait_healthy(name: str, timeout: float = 180) -> float:
    """Seconds until `podman healthcheck run` (the image's HEALTHCHECK) passes."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if podman("healthcheck", "run", name, check=False).returncode == 0:
            return time.monotonic() - start
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        assert state == "running", f"container {state}:\n" + podman("logs", name, check=False).stderr[-3000:]
        time.sleep(1)
    raise TimeoutError(f"{name} not healthy after {timeout}s:\n" + podman("logs", name, check=False).stderr[-3000:])


@pytest.fixture(scope="module", params=list(MODES))
def container(request, image, imagenet_ckpt):
    with pytest.raises(requests.ConnectionError):  # port 8999 must be ours (no `make serve` running)
        requests.get(f"{URL}/health", timeout=1)
    name = f"classifier-test-{request.param}"
    podman("rm", "-f", name, check=False)  # left by a run that was killed
    os.chmod(imagenet_ckpt, 0o644)  # the image's user (uid 10001) reads it through the mount
    podman(
        "run", "-d", "--name", name, "--network", "slirp4netns",
        "-p", "127.0.0.1:8999:8999", "-p", "127.0.0.1:8001:8001",
        *MODES[request.param],
        "-v", f"{imagenet_ckpt}:/weights/model.pth:ro",
        "-e", "MODEL_ARCH=resnet18", "-e", "MODEL_WEIGHTS=/weights/model.pth", "-e", "WORKERS=2",
        image,
    )  # fmt: skip
    try:
        ready = wait_healthy(name)
        print(f"\n{request.param}: healthy {ready:.1f} s after start")
        yield name
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)


def ctl(name: str, *args: str) -> str:
    return podman("exec", name, *CTL, *args, check=False).stdout


def predict(data: bytes, filename: str) -> requests.Response:
    return requests.post(URL + "/model_predict", files={"image": (filename, data)}, timeout=60)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_answers_like_the_model_in_process(container, client, kind, jpeg_bytes, png_bytes):
    data = jpeg_bytes if kind == "jpeg" else png_bytes
    got = predict(data, f"img.{kind}")
    want = client.post("/model_predict", data={"image": (io.BytesIO(data), f"img.{kind}")})
    assert got.status_code == want.status_code == 200, got.text
    assert_same_predictions(got.json()["predictions"], want.get_json()["predictions"])


def test_a_large_upload_spills_to_nginx_temp_files(container):
    """Over client_body_buffer_size (1 MiB), nginx writes the body to its temp path."""
    big = encode(photo((1600, 1600), seed=5), "PNG")
    assert len(big) > 1024 * 1024
    r = predict(big, "big.png")
    assert r.status_code == 200, r.text


def test_runs_as_a_non_root_user_with_both_programs_running(container):
    assert podman("exec", container, "id", "-u").stdout.strip() == "10001"
    users = {line.split()[0] for line in podman("top", container, "user").stdout.splitlines()[1:]}
    assert users == {"app"}, users  # supervisord (PID 1), nginx and gunicorn alike
    status = ctl(container, "status")
    assert [line.split()[:2] for line in status.splitlines()] == [
        ["nginx", "RUNNING"],
        ["our_app", "RUNNING"],
        ["startup_errors", "RUNNING"],  # the event listener (app/runtime/supervisor_events.py)
    ]


def test_nothing_writes_outside_the_writable_paths(container, request):
    writes = podman("exec", container, "sh", "-c", "touch /srv/probe 2>&1; touch /srv/run/probe && echo ok")
    assert writes.stdout.strip().endswith("ok")
    if "read-only" in request.node.callspec.id:
        assert "Read-only file system" in writes.stdout
    else:
        assert "Permission denied" in writes.stdout  # the app's user can't change its own code


def test_kill_9_of_the_gunicorn_master_heals(container, jpeg_bytes):
    old = ctl(container, "pid", "our_app").strip()
    podman("exec", container, "sh", "-c", f"kill -9 {old}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = ctl(container, "pid", "our_app").strip()
        if new not in (old, "0") and "RUNNING" in ctl(container, "status", "our_app"):
            try:
                if requests.get(URL + "/ready", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # refused, or nginx holding it while workers boot
                pass
        time.sleep(0.5)
    else:
        pytest.fail("gunicorn did not come back:\n" + ctl(container, "tail", "our_app"))
    assert predict(jpeg_bytes, "img.jpg").status_code == 200
    assert podman("healthcheck", "run", container, check=False).returncode == 0


def test_grpc_on_8001_answers_like_http(container, jpeg_bytes, tmp_path):
    """The image's second public port: tritonclient.grpc through the container's nginx."""
    need_clients()
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes)
    got = triton("grpc", "127.0.0.1:8001", "infer", "5", str(image))
    want = predict(jpeg_bytes, "a.jpg").json()["predictions"]
    assert [int(item.split(":")[1]) for item in got["classes"][0]] == [p["index"] for p in want]
