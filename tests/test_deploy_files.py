"""Deployment files are code: load each one and check the values that must agree across them."""

import configparser
import gc
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import pytest

from app.config import ROOT, Config
from tests.conftest import venv_bin


@pytest.fixture
def load_conf():
    """Execute gunicorn_conf.py with a given environment, then undo what it did to the process."""

    def load(**env):
        saved = dict(os.environ)
        for key in ("WORKERS", "GPUS", "TORCH_THREADS", "OMP_NUM_THREADS", "MAX_BATCH_SIZE", "THREADS"):
            os.environ.pop(key, None)
        os.environ.update(env)
        try:
            conf = runpy.run_path(str(ROOT / "gunicorn_conf.py"))
        finally:
            os.environ.clear()
            os.environ.update(saved)
            gc.enable()
        if conf["_OWN_METRICS_DIR"]:
            shutil.rmtree(conf["METRICS_DIR"], ignore_errors=True)  # no server ran to remove it
        return conf

    return load


def nginx_directive(name: str) -> str:
    match = re.search(rf"^\s*{name}\s+([^;]+);", (ROOT / "nginx.conf").read_text(), re.M)
    assert match, f"{name} missing from nginx.conf"
    return match.group(1).strip()


def seconds(value: str) -> int:
    return int(value.rstrip("s"))


def supervisor() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "supervisor.conf")
    return parser


# --- gunicorn_conf.py ------------------------------------------------------------------------


def test_gunicorn_defaults(load_conf):
    conf = load_conf()
    assert conf["bind"] == "127.0.0.1:10086"  # seed 001's port, behind nginx
    assert conf["WORKER_CLASS"] == "gthread" and conf["preload_app"] is True
    assert conf["worker_class"] == "app.runtime.workers.OneWriteThreadWorker"  # gthread, one send per response
    assert conf["timeout"] >= 60  # model start-up; seed 003's CRITICAL WORKER TIMEOUT
    assert conf["threads"] > conf["MAX_QUEUE"] + conf["MAX_BATCH_SIZE"]  # the queue, not gunicorn, sheds load
    assert conf["control_socket_disable"] is True and "control_socket" not in conf  # no second admin door
    assert conf["http_parser"] == "python"  # one parser, whether gunicorn_h1c is installed or not
    assert "keepalive " not in (ROOT / "nginx.conf").read_text().split("upstream classifier")[1].split("}")[0]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_threads_never_oversubscribe_the_cores(workers, tmp_path):
    """The file exports TORCH_THREADS for the app: workers x threads <= cores."""
    code = "import runpy, os; runpy.run_path('gunicorn_conf.py'); print(os.environ['TORCH_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_THREADS", "OMP_NUM_THREADS", "GPUS")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "WORKERS": str(workers)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cores = len(os.sched_getaffinity(0))
    assert workers * int(out) <= max(cores, workers)


def test_every_setting_reads_the_environment(load_conf):
    conf = load_conf(
        BIND="127.0.0.1:9000",
        WORKERS="3",
        WORKER_CLASS="gevent",
        TIMEOUT="300",
        MAX_REQUESTS="1000",
        MAX_REQUESTS_JITTER="50",
        PRELOAD="0",
    )
    assert (conf["bind"], conf["workers"], conf["worker_class"], conf["timeout"]) == (
        "127.0.0.1:9000",
        3,
        "gevent",
        300,
    )
    assert (conf["max_requests"], conf["max_requests_jitter"], conf["preload_app"]) == (1000, 50, False)


def test_gunicorn_accepts_the_config(tmp_path):
    env = {**os.environ, "MODEL_WEIGHTS": "random", "MODEL_ARCH": "resnet18", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [venv_bin("gunicorn"), "--check-config", "-c", "gunicorn_conf.py", "app:create_app()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_master_never_imports_torch_for_gpu_counting(tmp_path):
    code = "import runpy, sys; runpy.run_path('gunicorn_conf.py'); print('torch' in sys.modules)"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- nginx.conf ------------------------------------------------------------------------------


def render_backends(backends: str, out_dir, grpc_backends: str = "") -> subprocess.CompletedProcess:
    """supervisor.conf's step before nginx: app.runtime.upstreams writes the upstreams' server lines."""
    env = {**os.environ, "BACKENDS": backends, "GRPC_BACKENDS": grpc_backends}
    return subprocess.run(
        [sys.executable, "-m", "app.runtime.upstreams", str(out_dir)], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_nginx_config_test_passes(tmp_path):
    """The repo's file as supervisord starts it: rendered backends, a prefix of its own."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "tmp").mkdir()
    rendered = ROOT / "run" / "nginx"
    rendered.mkdir(parents=True, exist_ok=True)
    assert render_backends("127.0.0.1:10086,[::1]:10087", rendered, "127.0.0.1:8011").returncode == 0
    result = subprocess.run(
        ["nginx", "-e", "stderr", "-t", "-p", f"{tmp_path}/", "-c", str(ROOT / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # Every temp path nginx creates at start is under its prefix, never Debian's /var/lib/nginx.
    temp = {name: nginx_directive(f"{name}_temp_path") for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    assert all(path.startswith("tmp/") for path in temp.values()), temp


def test_backends_render_one_server_line_each(tmp_path):
    assert (
        render_backends(" 10.0.0.11:10086, 10.0.0.12:10086 ,[fd00::12]:9000", tmp_path, "10.0.0.11:8011").returncode
        == 0
    )
    servers = [line for line in (tmp_path / "backends.conf").read_text().splitlines() if line.startswith("server")]
    assert servers == [
        "server 10.0.0.11:10086 max_fails=3 fail_timeout=10s;",
        "server 10.0.0.12:10086 max_fails=3 fail_timeout=10s;",
        "server [fd00::12]:9000 max_fails=3 fail_timeout=10s;",
    ]
    assert "server 10.0.0.11:8011 " in (tmp_path / "grpc_backends.conf").read_text()
    assert render_backends("", tmp_path).returncode == 0  # unset or empty: this host's gunicorn
    assert "server 127.0.0.1:10086 " in (tmp_path / "backends.conf").read_text()
    assert "server 127.0.0.1:8011 " in (tmp_path / "grpc_backends.conf").read_text()


@pytest.mark.parametrize(
    "backends",
    ["10.0.0.11", "10.0.0.11:", "10.0.0.11:0", "10.0.0.11:70000", "host:port", ":10086", "a b:1", "fd00::1:80", ",,"],
)
def test_bad_backends_stop_nginx_with_one_line(backends, tmp_path):
    for http, grpc, variable in ((backends, "", "BACKENDS"), ("", backends, "GRPC_BACKENDS")):
        result = render_backends(http, tmp_path, grpc)
        assert result.returncode == 2 and not list(tmp_path.iterdir())
        assert len(result.stderr.strip().splitlines()) == 1 and f" {variable} " in result.stderr, result.stderr


def test_nginx_body_limit_equals_the_apps():
    size = nginx_directive("client_max_body_size")
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == Config().max_upload_bytes
    assert int(size[:-1]) >= 5  # a 12-megapixel phone photo passes


def test_nginx_waits_at_least_as_long_as_gunicorn(load_conf):
    conf = load_conf()
    assert seconds(nginx_directive("proxy_read_timeout")) >= conf["timeout"]
    assert nginx_directive("listen") == "8999"
    assert (
        nginx_directive("include") == "run/nginx/backends.conf" and nginx_directive("proxy_pass") == "http://classifier"
    )
    assert nginx_directive("proxy_set_header X-Request-ID") == "$req_id"


# --- supervisor.conf -------------------------------------------------------------------------


def test_supervisor_program_settings(load_conf):
    conf, sup = load_conf(), supervisor()
    app = sup["program:our_app"]
    assert app["command"] == 'gunicorn -c gunicorn_conf.py "app:create_app()"'
    # Restarted after a crash, but not after a configuration error (exit 3): no restart loop.
    assert (app["autorestart"], app["exitcodes"], app["stopasgroup"]) == ("unexpected", "3", "true")
    assert 1 <= int(app["startretries"]) <= 3
    listener = sup["eventlistener:startup_errors"]
    assert listener["stderr_logfile"] == "/dev/stderr" and listener["stderr_logfile_maxbytes"] == "0"
    assert "run/our_app.log" in listener["command"]
    assert int(app["stopwaitsecs"]) > conf["graceful_timeout"]
    assert "daemon off;" in sup["program:nginx"]["command"]
    assert sup["supervisorctl"]["serverurl"] == "unix://%(here)s/run/supervisor.sock"


def test_supervisor_paths_are_relative_to_the_checkout():
    text = (ROOT / "supervisor.conf").read_text()
    paths = re.findall(r"(?:file|logfile|directory|pidfile|childlogdir)=(\S+)", text)
    # /dev/stderr is supervisord's own stderr (the terminal, docker logs), not a file here.
    assert paths and all(p.startswith("%(here)s") or p == "/dev/stderr" for p in paths), paths


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_lints_clean():
    result = subprocess.run([venv_bin("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_lines() -> list[str]:
    return (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()


def test_everything_the_dockerfile_copies_exists():
    copies = [line.split()[1:-1] for line in dockerfile_lines() if line.startswith("COPY")]
    sources = [src for group in copies for src in group]
    assert "requirements.txt" in sources and "app/" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_dockerfile_runs_the_supervisord_the_tests_run():
    lines = dockerfile_lines()
    cmd = json.loads(next(line for line in lines if line.startswith("CMD"))[4:])
    assert cmd == ["supervisord", "-n", "-c", "/srv/supervisor.conf"]
    assert "EXPOSE 8999 8001" in lines and any(line.startswith("HEALTHCHECK") and "/ready" in line for line in lines)
    assert any(line.startswith("USER ") for line in lines)
    # Dependencies are installed before the code is copied, for layer caching.
    index = {line.split()[1]: i for i, line in enumerate(lines) if line.startswith("COPY")}
    pip = next(i for i, line in enumerate(lines) if "pip install -r requirements.txt" in line)
    assert index["requirements.txt"] < pip < index["app/"]


def test_ab_script_is_executable():
    assert os.access(ROOT / "scripts" / "ab_multipart.sh", os.X_OK)
