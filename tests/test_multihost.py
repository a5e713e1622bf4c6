"""Seed 002's picture for real: two model hosts and one nginx edge, each its own network host.

Each host is a network namespace the test makes (ip netns, veth pairs, private addresses
inside them): the edge routes between this machine (the client) and a private model network.

    client (root ns) 10.251.0.1 --- 10.251.0.2 edge: nginx :8999, BACKENDS=h1,h2
                                    10.251.1.1 --- 10.251.1.2 host 1: gunicorn :10086
                                    10.251.2.1 --- 10.251.2.2 host 2: gunicorn :10086

The edge runs supervisor.conf's own nginx command (app.runtime.upstreams renders BACKENDS, then
nginx starts); the hosts run the repo's gunicorn_conf.py bound to their private address.
Namespaces and links are removed afterwards, also when a test fails.
"""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest
import requests

from app.config import ROOT
from tests.conftest import missing, spawn, stop, venv_bin, wait_ready

PREFIX = "clst"  # every namespace and link this module makes starts with it
EDGE = "10.251.0.2"
HOSTS = {"h1": "10.251.1.2", "h2": "10.251.2.2"}
EDGE_URL = f"http://{EDGE}:8999"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", f"{PREFIX}-{ns}", *cmd]


def teardown() -> None:
    """Remove what this module makes; deleting a namespace deletes its ends of the veths."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        if line.startswith(PREFIX + "-"):
            ip("netns", "delete", line.split()[0], check=False)
    ip("link", "delete", f"{PREFIX}-root", check=False)


def link(a_ns: str | None, a_if: str, a_addr: str, b_ns: str, b_if: str, b_addr: str) -> None:
    """A veth pair made straight inside its namespaces (a_ns None: this machine's), /24 each end."""
    a_where = ["netns", f"{PREFIX}-{a_ns}"] if a_ns else []
    ip("link", "add", a_if, *a_where, "type", "veth", "peer", "name", b_if, "netns", f"{PREFIX}-{b_ns}")
    for ns, dev, addr in ((a_ns, a_if, a_addr), (b_ns, b_if, b_addr)):
        where = ["-n", f"{PREFIX}-{ns}"] if ns else []
        ip(*where, "addr", "add", f"{addr}/24", "dev", dev)
        ip(*where, "link", "set", dev, "up")


@pytest.fixture(scope="module")
def network():
    if os.geteuid() != 0 or not shutil.which("ip"):
        missing("the multi-host test needs root and iproute2 to make network namespaces")
    teardown()  # a previous run killed before its own teardown
    try:
        for ns in ("edge", *HOSTS):
            ip("netns", "add", f"{PREFIX}-{ns}")
            ip("-n", f"{PREFIX}-{ns}", "link", "set", "lo", "up")
        link(None, f"{PREFIX}-root", "10.251.0.1", "edge", "e0", EDGE)
        for n, (host, addr) in enumerate(HOSTS.items(), start=1):
            link("edge", f"e{n}", f"10.251.{n}.1", host, "eth0", addr)
            ip("-n", f"{PREFIX}-{host}", "route", "add", "default", "via", f"10.251.{n}.1")
        # The edge routes between the client and the model network, like a DMZ host.
        subprocess.run(in_ns("edge", "sysctl", "-qw", "net.ipv4.ip_forward=1"), check=True)
        ip("route", "add", "10.251.0.0/16", "via", EDGE, "dev", f"{PREFIX}-root")
        # Traffic is sent only once every address routes through a link this fixture made,
        # never out through the machine's default route.
        for addr in (EDGE, *HOSTS.values()):
            route = ip("route", "get", addr).stdout
            assert f"dev {PREFIX}-root" in route, route
        yield
    finally:
        teardown()


def start_host(name: str, ckpt, log_dir) -> subprocess.Popen:
    env = {
        "MODEL_ARCH": "resnet18",
        "MODEL_WEIGHTS": str(ckpt),
        "WORKERS": "1",
        "BIND": f"{HOSTS[name]}:10086",  # a model host listens on its network, not loopback
        "ACCESS_LOG": "/dev/null",
    }
    proc = spawn(
        in_ns(name, venv_bin("gunicorn"), "-c", "gunicorn_conf.py", "app:create_app()"), env, log_dir / f"{name}.log"
    )
    wait_ready(f"http://{HOSTS[name]}:10086/ready", proc)
    return proc


def nginx_command() -> str:
    """supervisor.conf's nginx program, %(here)s filled in as supervisord does."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "supervisor.conf")
    return parser["program:nginx"]["command"].replace("%(here)s", str(ROOT))


@pytest.fixture(scope="module")
def cluster(network, imagenet_ckpt, tmp_path_factory):
    logs = tmp_path_factory.mktemp("multihost")
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in HOSTS:
            procs[name] = start_host(name, imagenet_ckpt, logs)
        backends = ",".join(f"{addr}:10086" for addr in HOSTS.values())
        env = {"BACKENDS": backends, "PATH": f"{os.path.dirname(venv_bin('python'))}:{os.environ['PATH']}"}
        procs["edge"] = spawn(in_ns("edge", "bash", "-c", nginx_command()), env, logs / "edge.log")
        wait_ready(EDGE_URL + "/health", procs["edge"], timeout=30)
        yield procs, logs
    finally:
        for proc in procs.values():
            stop(proc)


def answered_by(since: int) -> tuple[Counter, int]:
    """Per backend, requests it answered since byte `since` of nginx's access log; and retries.

    `ua=` is the log line's last field: one address, or "a, b" when nginx retried on b.
    """
    time.sleep(1.5)  # access_log flush=1s
    log = (ROOT / "run/nginx/logs/access.log").read_text()[since:]
    tried = [line.split(" ua=", 1)[1].split(", ") for line in log.splitlines()]
    return Counter(addrs[-1] for addrs in tried), sum(len(addrs) > 1 for addrs in tried)


def log_size() -> int:
    time.sleep(1.5)  # access_log flush=1s: earlier requests' lines are written first
    path = ROOT / "run/nginx/logs/access.log"
    return path.stat().st_size if path.exists() else 0


class Load(threading.Thread):
    """One client posting through the edge until stopped; every outcome is kept."""

    def __init__(self, jpeg: bytes):
        super().__init__(daemon=True)
        self.jpeg, self.stopped, self.results = jpeg, threading.Event(), []

    def run(self):
        while not self.stopped.is_set():
            try:
                r = requests.post(EDGE_URL + "/model_predict", files={"image": ("a.jpg", self.jpeg)}, timeout=60)
                self.results.append(r.status_code)
            except requests.RequestException as exc:  # a failed request is a result too
                self.results.append(repr(exc))


def run_load(jpeg: bytes, seconds: float, during=None, clients: int = 4) -> list:
    loads = [Load(jpeg) for _ in range(clients)]
    for load in loads:
        load.start()
    if during:
        during()
    time.sleep(seconds)
    for load in loads:
        load.stopped.set()
    for load in loads:
        load.join(70)
    return [result for load in loads for result in load.results]


def test_backends_come_from_the_environment(cluster):
    rendered = (ROOT / "run/nginx/backends.conf").read_text()
    assert [line.split()[1] for line in rendered.splitlines() if line.startswith("server")] == [
        f"{addr}:10086" for addr in HOSTS.values()
    ]


def test_both_hosts_serve_under_load(cluster, jpeg_bytes):
    mark = log_size()
    results = run_load(jpeg_bytes, 6)
    by_host, retried = answered_by(mark)
    assert Counter(results) == Counter({200: len(results)}) and len(results) >= 8
    assert sum(by_host.values()) == len(results) and retried == 0
    assert set(by_host) == {f"{addr}:10086" for addr in HOSTS.values()}, by_host
    assert min(by_host.values()) >= len(results) // 4, by_host  # round-robin, not all on one


def test_killing_a_host_costs_no_client_a_request(cluster, jpeg_bytes, imagenet_ckpt):
    procs, logs = cluster

    def kill_h1():
        time.sleep(2)
        os.killpg(procs["h1"].pid, signal.SIGKILL)  # master and workers, mid-request

    mark = log_size()
    results = run_load(jpeg_bytes, 6, during=kill_h1)
    procs["h1"].wait(10)
    assert [r for r in results if r != 200] == [] and len(results) >= 8
    during, retried = answered_by(mark)
    print(f"\nfailover: {len(results)} requests, 0 failed, {retried} retried on h2, per host {dict(during)}")
    assert retried > 0 and during[f"{HOSTS['h1']}:10086"] > 0  # h1 served, then died with work on it

    # The host comes back and gets traffic again once nginx's fail_timeout (10 s) passes.
    stop(procs["h1"])
    procs["h1"] = start_host("h1", imagenet_ckpt, logs)
    time.sleep(10)
    mark = log_size()
    results = run_load(jpeg_bytes, 6)
    after, _ = answered_by(mark)
    print(f"after return: {len(results)} requests, per host {dict(after)}")
    assert Counter(results) == Counter({200: len(results)})
    assert after[f"{HOSTS['h1']}:10086"] > 0 and after[f"{HOSTS['h2']}:10086"] > 0, after
