"""Cores from the cgroup CPU quota (v1 and v2), with fake cgroup files: a pod's limits.cpu,
not the node's cores, decides gunicorn's worker and thread counts."""

import os
import subprocess
import sys

import pytest

from app.config import ROOT
from app.runtime.cpus import available_cores, quota_cores

AFFINITY = len(os.sched_getaffinity(0))


def v2(tmp_path, text: str):
    (tmp_path / "cpu.max").write_text(text + "\n")
    return tmp_path


def v1(tmp_path, quota: int, period: int = 100000, folder: str = "cpu"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("make", "quota"),
    [
        (lambda p: v2(p, "max 100000"), None),
        (lambda p: v2(p, "150000 100000"), 1.5),
        (lambda p: v2(p, "50000 100000"), 0.5),
        (lambda p: v1(p, -1), None),
        (lambda p: v1(p, 200000), 2.0),
        (lambda p: v1(p, 25000, 50000, "cpu,cpuacct"), 0.5),
        (lambda p: p, None),  # no cgroup files at all
    ],
)
def test_quota_from_v1_and_v2_files(tmp_path, make, quota):
    assert quota_cores(make(tmp_path)) == quota


def test_the_quota_caps_the_affinity_and_rounds_up(tmp_path):
    assert available_cores(v2(tmp_path, "50000 100000")) == 1  # half a core: one worker
    assert available_cores(v2(tmp_path, "100000000 100000")) == AFFINITY  # a quota above the CPUs we have
    if AFFINITY >= 2:
        assert available_cores(v2(tmp_path, "150000 100000")) == 2


def test_gunicorn_conf_follows_the_quota(tmp_path):
    """gunicorn_conf.py as the master runs it, with cgroup v2 saying one core."""
    fake = v2(tmp_path, "100000 100000")
    code = (
        "import runpy, app.runtime.cpus as c, pathlib, sys; c.CGROUP = pathlib.Path(sys.argv[1]);"
        "conf = runpy.run_path('gunicorn_conf.py'); print(conf['workers'], conf['THREADS_PER_WORKER'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORKERS", "TORCH_THREADS", "GPUS")}
    env |= {"GPUS": "none", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code, str(fake)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "1"], out.stderr[-2000:]
