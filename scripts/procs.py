"""Starting and stopping the real programs (gunicorn, nginx) on loopback, for tests and benches.

Every process starts in its own session so that `stop` can kill its whole tree: a gunicorn
master's workers, or an nginx master's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def spawn(cmd: list[str], env: dict, log: Path | str) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.log_file = out
    return proc


def stop(proc: subprocess.Popen) -> None:
    """TERM the process group (graceful), then KILL whatever is left in it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.log_file.close()


OUR_APP = ("-c", "gunicorn_conf.py", "app:create_app()")


def start_gunicorn(env: dict, log: Path, args: tuple[str, ...] = OUR_APP) -> tuple[subprocess.Popen, str]:
    """gunicorn on a free loopback port (`BIND`), by default with our config and app."""
    port = free_port()
    # No gRPC listener unless asked for: two servers on one GRPC_BIND would share it (SO_REUSEPORT).
    env = {"BIND": f"127.0.0.1:{port}", "GRPC_BIND": "", **env}
    proc = spawn([venv_bin("gunicorn"), "-b", f"127.0.0.1:{port}", *args], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + ("/ready" if args == OUR_APP else "/health"), proc)
    except (RuntimeError, TimeoutError):
        stop(proc)
        raise RuntimeError(f"gunicorn did not start:\n{Path(log).read_text()[-3000:]}") from None
    return proc, url


def start_redis(workdir: Path, port: int, *args: str) -> subprocess.Popen:
    """Debian's redis-server on loopback:port, nothing persisted; `args` add options (a password, TLS)."""
    import redis

    workdir.mkdir(parents=True, exist_ok=True)
    cmd = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    tls = "--tls-port" in args
    cmd += ["--port", "0" if tls else str(port), *args]
    proc = spawn(cmd, {}, workdir / f"redis-{port}.log")
    password = args[args.index("--requirepass") + 1] if "--requirepass" in args else None
    ssl = {"ssl": True, "ssl_cert_reqs": "none"} if tls else {}
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1, **ssl)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                log = (workdir / f"redis-{port}.log").read_text()
                raise RuntimeError(f"redis-server did not start: {log}") from None
            time.sleep(0.05)


def render_nginx_conf(listen_port: int, backends: list[str], grpc: tuple[int, list[str]] | None = None) -> str:
    """The repo's nginx.conf, listening on loopback:listen_port and proxying to `backends`;
    with `grpc` (port, backends), also gRPC on loopback:port.

    The upstreams' servers are rendered by app.runtime.upstreams, as supervisor.conf does, but inline:
    the copy lives in its own prefix, where the repo-relative include would not resolve.
    """
    from app.runtime.upstreams import render

    grpc_port, grpc_backends = grpc or (free_port(), ["127.0.0.1:9"])  # a port nobody uses
    conf = (ROOT / "nginx.conf").read_text()
    conf = conf.replace("include run/nginx/backends.conf;", render(backends).replace("\n", "\n        "))
    conf = conf.replace("include run/nginx/grpc_backends.conf;", render(grpc_backends).replace("\n", "\n        "))
    conf = conf.replace("listen 8001 http2;", f"listen 127.0.0.1:{grpc_port} http2;")
    return conf.replace("listen 8999;", f"listen 127.0.0.1:{listen_port};")


def start_nginx(prefix: Path, backends: list[str], grpc=None, edit=None) -> tuple[subprocess.Popen, str]:
    """`edit` (conf text -> conf text) lets a bench try a variant of the repo's nginx.conf."""
    port = free_port()
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    # Bodies over client_body_buffer_size spill to temp files, which nginx's workers (nobody,
    # when tests run as root) write: pytest's 0700 directories would keep them out (a 500).
    spill = Path(tempfile.mkdtemp(prefix="nginx-tmp-"))
    spill.chmod(0o755)
    conf = render_nginx_conf(port, backends, grpc).replace("_temp_path tmp/", f"_temp_path {spill}/")
    conf = edit(conf) if edit else conf
    (prefix / "nginx.conf").write_text(conf)
    proc = spawn(
        ["nginx", "-e", "stderr", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        {},
        prefix / "nginx.out",
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/health", proc, timeout=20)
    return proc, url


class Stack(NamedTuple):
    url: str  # nginx, the public face
    gunicorn: subprocess.Popen  # the master
    nginx: subprocess.Popen
    access_log: Path  # nginx's
    log: Path  # gunicorn's
    backend: str = ""  # gunicorn's own URL, past nginx


@contextlib.contextmanager
def stack(env: dict, workdir: Path, args: tuple[str, ...] = OUR_APP, nginx_edit=None):
    """gunicorn (random weights unless `env` names some) behind the repo's nginx, on loopback."""
    workdir.mkdir(parents=True, exist_ok=True)
    gunicorn, backend = start_gunicorn(
        {"ACCESS_LOG": "/dev/null", "MODEL_WEIGHTS": "random", **env}, workdir / "gunicorn.log", args
    )
    try:
        nginx, url = start_nginx(workdir / "nginx", [backend.removeprefix("http://")], edit=nginx_edit)
        try:
            access = workdir / "nginx" / "logs" / "access.log"
            yield Stack(url, gunicorn, nginx, access, workdir / "gunicorn.log", backend)
        finally:
            stop(nginx)
    finally:
        stop(gunicorn)
