"""The whole stack as real processes on loopback: supervisord -> gunicorn (:10086) + nginx (:8999).

It runs the repository's own supervisor.conf and nginx.conf, the command the Docker image
runs, so the ports are the real ones. Faults are injected with kill -9, as in production.
"""

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter

import psutil
import pytest
import requests

from app.config import ROOT
from tests import conftest
from tests.conftest import ctl, encode, free_port, photo, start_nginx, stop, supervisord, wait_ready

NGINX = "http://127.0.0.1:8999"
GUNICORN = "http://127.0.0.1:10086"


def master_pid() -> int:
    return int(ctl("pid", "our_app").strip())


def worker_pids() -> list[int]:
    return [p.pid for p in psutil.Process(master_pid()).children() if "gunicorn" in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def stack(imagenet_ckpt, tmp_path_factory):
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(imagenet_ckpt), "WORKERS": "2"}
    with supervisord(env, tmp_path_factory.mktemp("stack") / "supervisord.out") as proc:
        wait_ready(NGINX + "/ready", proc)
        wait_ready(GUNICORN + "/ready", proc)
        yield proc


def predict(base: str, data: bytes, **kwargs) -> requests.Response:
    return requests.post(base + "/model_predict", files={"image": ("img.jpg", data)}, timeout=60, **kwargs)


class Load(conftest.Load):
    """Clients posting through nginx until stopped; every response is recorded."""

    def __init__(self, data: bytes, clients: int = 4):
        super().__init__(NGINX, data, clients)


def wait_until(condition, timeout: float = 60, step: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def assert_json_502s(failures):
    for _, status, content_type, text in failures:
        assert status == 502 and content_type == "application/json", (status, text[:200])
        assert '"error": "bad_gateway"' in text


def test_nginx_and_gunicorn_give_the_same_answer(stack, jpeg_bytes):
    via_nginx = predict(NGINX, jpeg_bytes, headers={"X-Request-ID": "trace-123"})
    direct = predict(GUNICORN, jpeg_bytes)
    assert via_nginx.status_code == direct.status_code == 200
    assert via_nginx.json()["predictions"] == direct.json()["predictions"]
    assert via_nginx.headers["X-Request-ID"] == via_nginx.json()["request_id"] == "trace-123"


def test_nginx_generates_a_request_id_the_app_sees(stack, jpeg_bytes):
    r = predict(NGINX, jpeg_bytes)
    assert (
        re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"]) and r.json()["request_id"] == r.headers["X-Request-ID"]
    )


def test_one_id_joins_the_nginx_gunicorn_and_app_log_lines(stack, jpeg_bytes):
    rid = predict(NGINX, jpeg_bytes).headers["X-Request-ID"]
    access, app_log = ROOT / "run/nginx/logs/access.log", ROOT / "run/our_app.log"

    def lines():
        return [line for path in (access, app_log) for line in path.read_text().splitlines() if rid in line]

    assert wait_until(lambda: len(lines()) == 3, timeout=10), lines()  # nginx flushes its log every 1 s
    edge, gunicorn, app = sorted(lines(), key=lambda line: (line.startswith("{"), "rt=" not in line))
    assert f"rid={rid}" in edge and " 200 " in edge and "urt=" in edge
    assert f"rid={rid}" in gunicorn and '"POST /model_predict HTTP/1.1" 200' in gunicorn
    assert json.loads(app)["request_id"] == rid and json.loads(app)["status"] == 200


def test_a_phone_photo_passes_nginx(stack):
    photo_12mp = encode(photo((4032, 3024), seed=9), "JPEG", quality=95)
    assert len(photo_12mp) > 2_000_000  # over nginx's 1 MB default
    assert predict(NGINX, photo_12mp).status_code == 200


def test_too_large_for_nginx_is_json_413(stack):
    r = requests.post(
        NGINX + "/model_predict", data=b"\0" * (21 * 1024 * 1024), headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert r.status_code == 413 and r.json()["error"] == "request_entity_too_large"


def test_apachebench_multipart_through_nginx(stack, tmp_path, jpeg_bytes):
    image = tmp_path / "web.jpg"
    image.write_bytes(jpeg_bytes)
    out = subprocess.run(
        [str(ROOT / "scripts" / "ab_multipart.sh"), str(image), NGINX + "/model_predict", "100", "8"],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "Complete requests:      100" in out and "Failed requests:        0" in out, out
    assert "Non-2xx" not in out


def test_failover_to_a_live_backend(stack, tmp_path, jpeg_bytes):
    """The repo's nginx.conf with a dead backend listed first: nobody sees it."""
    dead = f"127.0.0.1:{free_port()}"
    proc, url = start_nginx(tmp_path, [dead, "127.0.0.1:10086"])
    try:
        statuses = Counter(predict(url, jpeg_bytes).status_code for _ in range(10))
    finally:
        stop(proc)
    assert statuses == {200: 10}
    assert f"{dead}, 127.0.0.1:10086" in (tmp_path / "logs" / "access.log").read_text()


def test_kill_9_a_worker_under_load(stack, jpeg_bytes):
    before = worker_pids()
    assert len(before) == 2
    with Load(jpeg_bytes, clients=4) as load:
        time.sleep(1.5)
        os.kill(before[0], signal.SIGKILL)
        assert wait_until(lambda: len(worker_pids()) == 2 and before[0] not in worker_pids())
        time.sleep(3)
    assert len(load.results) > 20
    failures = load.failures()
    assert len(failures) <= 4  # at most what that worker had in flight (4 clients)
    assert_json_502s(failures)
    assert load.results[-1][1] == 200


def test_kill_9_the_master_under_load(stack, jpeg_bytes):
    old_master = master_pid()
    with Load(jpeg_bytes, clients=2) as load:
        time.sleep(1)
        os.kill(old_master, signal.SIGKILL)
        assert wait_until(lambda: "RUNNING" in ctl("status", "our_app") and master_pid() != old_master, 90)
        # The new master may retry its bind while the orphaned workers notice and exit.
        wait_ready(GUNICORN + "/ready", timeout=90)
        time.sleep(2)
    assert_json_502s(load.failures())
    assert load.results[-1][1] == 200  # back without any manual step


def test_supervisorctl_stop_and_start(stack, jpeg_bytes):
    assert "stopped" in ctl("stop", "our_app")
    assert "STOPPED" in ctl("status", "our_app")
    down = predict(NGINX, jpeg_bytes)
    assert down.status_code == 502 and down.json()["error"] == "bad_gateway"
    assert "started" in ctl("start", "our_app")
    wait_ready(NGINX + "/ready")
    assert predict(NGINX, jpeg_bytes).status_code == 200
