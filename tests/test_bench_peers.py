"""The bench's peer table and harness, without installing any peer (CI stays light).

The peers themselves run only in `make bench` (scripts/bench_peers.py); here: each is named
with its pin and install dir, its server module compiles, every peer builds the same weights,
and the harness pauses and stops a process tree that leaves its group, as BentoML's and
Ray's workers do.
"""

from __future__ import annotations

import py_compile
import signal
import subprocess
import sys
import time

import psutil
import torch

from scripts import bench_peers
from scripts.peers import common
from scripts.peers.harness import PEER_ROOT, PEERS, signal_tree, stop_tree
from scripts.procs import ROOT


def test_each_peer_is_named_pinned_and_installed_apart():
    pins = {p.name: p.pins[0] for p in PEERS}
    assert pins == {"litserve": "litserve==0.2.19", "bentoml": "bentoml==1.4.40", "rayserve": "ray[serve]==2.60.0"}
    for peer in PEERS:
        assert peer.target == PEER_ROOT / peer.name == ROOT / "bench" / "peers" / peer.name
        assert "python-multipart" in peer.pins  # the form parser each needs for ab's upload
        assert peer.name in bench_peers.LABELS


def test_peer_servers_compile():
    for name in ("common", "harness", "litserve_server", "bentoml_server", "rayserve_server"):
        py_compile.compile(str(ROOT / "scripts" / "peers" / f"{name}.py"), doraise=True)
    for peer in PEERS:  # each command names a module that is there (BentoML's names its service's)
        module = next(a for a in peer.command if a.startswith("scripts.peers."))
        assert (ROOT / (module.split(":")[0].replace(".", "/") + ".py")).is_file()


def test_every_peer_builds_the_same_weights():
    a, b = common.build_model().state_dict(), common.build_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    image = torch.rand(1, 3, 224, 224)
    assert len(common.top5(common.forward(common.build_model(), image)[0])["predictions"]) == 5


CHILD_IN_ITS_OWN_SESSION = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
time.sleep(60)
"""


def test_harness_pauses_and_stops_a_tree_that_leaves_its_group(tmp_path):
    out = open(tmp_path / "log", "wb")  # noqa: SIM115 - closed by stop_tree
    proc = subprocess.Popen([sys.executable, "-c", CHILD_IN_ITS_OWN_SESSION], stdout=out, start_new_session=True)
    proc.log_file = out
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + 10
    while not root.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = root.children()[0]
    signal_tree(proc, signal.SIGSTOP)
    time.sleep(0.2)
    assert {root.status(), child.status()} == {psutil.STATUS_STOPPED}
    stop_tree(proc)  # a stopped tree is resumed first, or TERM would wait forever
    assert proc.returncode is not None
    child.wait(5)
    assert not child.is_running()


def test_report_names_cpu_flags_and_says_why_bf16_is_missing():
    run = {"rps": 20.0, "p50": 300.0}
    names = ["ours", "ours_torch", *(p.name for p in PEERS), "baseline"]
    part = {
        "medians": {n: {"rps": 20.0 + i, "p50": 300.0} for i, n in enumerate(names)},
        "samples": {n: [run, run, run] for n in names},
        "idle_cores": {"litserve": 0.3, "bentoml": 0.004},
    }
    text = "\n".join(bench_peers.report({**part, "cpu_flags": {"avx2": True, "amx_bf16": False}, "bf16": None}))
    assert "CPU flags: avx2 yes, amx_bf16 no." in text
    assert "bf16 not measured" in text
    assert "| 0.30 (paused) |" in text and "| 0.00 |" in text
    assert "BentoML 1.4.40" in text and "Ray Serve 2.60.0" in text and "| 0.80x |" in text  # ours 20 / seed 25
