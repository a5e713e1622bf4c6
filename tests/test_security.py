"""Safe defaults: loopback-only gunicorn, a non-root container, and no path from a request to
the file system or to pickle."""

import builtins
import mimetypes
import pickle

import torch

from tests.test_deploy_files import dockerfile_lines, load_conf  # noqa: F401 - fixture
from tests.test_routes import upload


def test_gunicorn_listens_on_loopback_only(load_conf):  # noqa: F811
    assert load_conf()["bind"].startswith("127.0.0.1:")


def test_the_container_runs_as_a_non_root_user():
    user = next(line for line in dockerfile_lines() if line.startswith("USER ")).split()[1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes' runAsNonRoot can verify it


def test_a_request_reaches_no_file_and_no_pickle(client, jpeg_bytes, monkeypatch):
    opened = []
    real_open = builtins.open

    def watch_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("a request must never unpickle anything")

    mimetypes.init()  # the test client reads /etc/mime.types once to label the upload
    monkeypatch.setattr(builtins, "open", watch_open)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    r = client.post("/model_predict", data=upload(jpeg_bytes, name="../../etc/passwd"))
    assert r.status_code == 200
    assert all(path.startswith("/proc/self/") for path in opened), opened  # only the memory gauge
