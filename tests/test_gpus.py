"""GPU pinning, with fake workers driven through gunicorn_conf.py's real hooks (no GPU here)."""

import itertools
import logging
import os
import random
from collections import Counter

import pytest

from app import create_app
from app.model.gpus import list_gpus, pick_gpu
from tests.conftest import make_config
from tests.test_deploy_files import load_conf  # noqa: F401 - fixture


class FakeWorker:
    pids = itertools.count(1000)

    def __init__(self, age: int):
        self.pid, self.age = next(self.pids), age


class FakeServer:
    """What the hooks see of gunicorn's Arbiter: the live workers, their count and a logger."""

    def __init__(self, num_workers: int = 1):
        self.WORKERS: dict[int, FakeWorker] = {}
        self.num_workers, self.worker_age = num_workers, 0
        self.log = logging.getLogger("fake.arbiter")

    def spawn(self, conf) -> FakeWorker:
        self.worker_age += 1  # as gunicorn's Arbiter.spawn_worker numbers them
        worker = FakeWorker(self.worker_age)
        conf["pre_fork"](self, worker)
        self.WORKERS[worker.pid] = worker
        return worker

    def load(self) -> Counter:
        return Counter(w.gpu for w in self.WORKERS.values())


def test_list_gpus(tmp_path):
    assert list_gpus("0,2") == [0, 2] and list_gpus("none") == []
    for i in range(3):
        (tmp_path / f"0000:0{i}:00.0").mkdir()
    assert list_gpus("", str(tmp_path)) == [0, 1, 2]
    assert list_gpus("", str(tmp_path / "missing")) == []  # no driver: CPU
    with pytest.raises(ValueError, match="GPUS='a,b'"):
        list_gpus("a,b")


def test_pick_gpu_balances_and_caps():
    assert pick_gpu([0, 1], []) == 0
    assert pick_gpu([0, 1], [0]) == 1
    assert pick_gpu([0, 1], [0, 1, None]) == 0
    with pytest.raises(RuntimeError, match="WORKERS_PER_GPU"):
        pick_gpu([0, 1], [0, 1], per_gpu=1)


def test_workers_are_spread_over_the_gpus(load_conf):  # noqa: F811
    conf = load_conf(GPUS="0,1", WORKERS_PER_GPU="2")
    assert conf["workers"] == 4
    server = FakeServer()
    for _ in range(4):
        server.spawn(conf)
    assert server.load() == {0: 2, 1: 2}


def test_replacements_go_where_workers_died(load_conf):  # noqa: F811
    """age % n_gpus would drift here: replacements get the GPU their dead predecessors left."""
    conf = load_conf(GPUS="0,1,2", WORKERS_PER_GPU="2")
    server = FakeServer()
    for _ in range(6):
        server.spawn(conf)
    rng = random.Random(7)
    for _ in range(200):
        victims = rng.sample(sorted(server.WORKERS), rng.randint(1, 3))
        for pid in victims:
            del server.WORKERS[pid]
        for _ in victims:
            server.spawn(conf)
        assert server.load() == {0: 2, 1: 2, 2: 2}


def test_post_fork_pins_the_worker_before_cuda(load_conf, monkeypatch):  # noqa: F811
    conf = load_conf(GPUS="0,1")
    server = FakeServer()
    first, second = server.spawn(conf), server.spawn(conf)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    conf["post_fork"](server, second)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and first.gpu == 0


def test_loading_in_the_master_never_touches_cuda(imagenet_ckpt, monkeypatch):
    """With preload the app is built in the master; CUDA there would break every fork."""
    import torch

    def forbidden(*args, **kwargs):
        raise AssertionError("CUDA touched in the master")

    for name in ("is_available", "init", "device_count", "current_device"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    app = create_app(make_config(imagenet_ckpt, defer_start=True))
    assert app.extensions["classifier"].ready is False
