"""Each command installs only what it needs: the package groups of scripts/install_system.sh and
the steps `make -n` would run, checked without installing anything."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install_system.sh"
BASH = shutil.which("bash") or "/bin/bash"
# What an install step's command line holds (the scratch folder's own name may say "install").
INSTALLS = ("install_system.sh", "install_tools.sh", "pip install", "python3 -m venv")

# What serving never needs: the browser, the container tools, the load and cache test tools.
NOT_FOR_SERVING = {
    "chromium",
    "chromium-driver",
    "podman",
    "buildah",
    "runc",
    "mmdebstrap",
    "redis-server",
    "apache2-utils",
    "libb64-0d",
    "iproute2",
    "curl",
    "openssl",
}
CONTAINER = {"podman", "buildah", "runc", "conmon", "catatonit", "slirp4netns", "fuse-overlayfs", "uidmap"}
CONTAINER |= {"containernetworking-plugins", "golang-github-containers-common", "iptables", "mmdebstrap"}


def stubs(tmp_path: Path, uid: int) -> tuple[Path, Path]:
    """A PATH folder whose apt-get only leaves a mark, and whose id says `uid`."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "apt-get-ran"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return bin_dir, mark


def listed(*groups: str) -> list[str]:
    out = subprocess.run([BASH, str(SCRIPT), "--list", *groups], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_serve_group_is_nginx_and_the_venv_only():
    serve = set(listed("serve"))
    assert serve == {"python3", "python3-venv", "nginx"}
    assert not serve & NOT_FOR_SERVING


def test_image_group_is_podman_and_mmdebstrap():
    image = set(listed("image"))
    assert image == CONTAINER
    assert "nginx" not in image and "chromium" not in image


def test_test_group_holds_everything_the_tests_run():
    test = set(listed("test"))
    assert test >= set(listed("serve", "image", "bench")) | NOT_FOR_SERVING
    assert set(listed("bench")) == {"apache2-utils", "redis-server", "libb64-0d"}


def test_each_package_is_listed_once():
    together = listed("serve", "test", "image")
    assert len(together) == len(set(together))


def test_list_installs_nothing(tmp_path):
    bin_dir, mark = stubs(tmp_path, uid=0)
    env = {**os.environ, "PATH": str(bin_dir)}  # every package would count as missing
    out = subprocess.run([BASH, str(SCRIPT), "--list", "test"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "nginx" in out.stdout.split()
    assert not mark.exists()


def test_missing_packages_without_root_name_the_command(tmp_path):
    bin_dir, mark = stubs(tmp_path, uid=1000)
    env = {**os.environ, "PATH": str(bin_dir)}
    out = subprocess.run([BASH, str(SCRIPT), "serve"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert "sudo apt-get install python3 python3-venv nginx" in out.stderr
    assert not mark.exists()


@pytest.mark.parametrize("args", [[], ["everything"], ["--list"], ["--list", "serve", "nope"]])
def test_unknown_or_no_group_is_a_usage_error(args):
    out = subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True)
    assert out.returncode == 2 and "usage:" in out.stderr and out.stdout == ""


@pytest.fixture
def scratch(tmp_path):
    """The Makefile and the files its stamps depend on, in a folder with no venv yet."""
    assert shutil.which("make"), "make is missing: the suite itself runs as `make test`"
    for name in ["Makefile", *(p.name for p in ROOT.glob("requirements*.txt"))]:
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    for name in ("install_system.sh", "install_tools.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    return tmp_path


def dry_run(where: Path, target: str) -> str:
    """The commands `make -n TARGET` would run there (the caller's make settings left out)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV")}
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", target], cwd=where, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("target", ["install", "serve"])
def test_serving_installs_requirements_txt_and_nginx_only(scratch, target):
    steps = dry_run(scratch, target)
    assert "install_system.sh serve" in steps and "-r requirements.txt" in steps
    for other in ("requirements-dev.txt", "install_tools.sh", "install_system.sh test", "install_system.sh image"):
        assert other not in steps


def test_test_installs_the_test_tools_on_top(scratch):
    steps = dry_run(scratch, "test")
    for step in ("install_system.sh serve", "-r requirements.txt", "-r requirements-dev.txt"):
        assert step in steps
    assert "install_system.sh test" in steps and "bash scripts/install_tools.sh\n" in steps
    assert steps.index("install_tools.sh") < steps.index("pytest")


def test_image_needs_no_venv(scratch):
    steps = dry_run(scratch, "image")
    assert "install_system.sh image" in steps and "scripts/image.sh" in steps
    assert "pip" not in steps and "python3 -m venv" not in steps and "install_system.sh serve" not in steps


def test_bench_and_lint_install_what_they_run(scratch):
    bench = dry_run(scratch, "bench")
    assert "install_system.sh bench" in bench and "install_tools.sh clients" in bench
    assert "-r requirements-dev.txt" in bench and "install_system.sh test" not in bench
    lint = dry_run(scratch, "lint")
    assert "-r requirements-dev.txt" in lint and "ruff check" in lint
    assert "install_system.sh serve" not in lint and "install_tools.sh" not in lint


def installed(scratch: Path) -> None:
    """A venv and every stamp, newer than the files they were made from."""
    python = scratch / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch(mode=0o755)
    for stamp in ("serve", "dev", "bench", "test", "image"):
        (scratch / ".venv" / f".installed-{stamp}").touch()
    for path in [python, *(scratch / ".venv").glob(".installed-*")]:
        os.utime(path, (2_000_000_000, 2_000_000_000))


def test_installed_once_means_not_again(scratch):
    installed(scratch)
    assert dry_run(scratch, "serve").strip().endswith("supervisord -n -c supervisor.conf")
    for target in ("install", "serve", "test", "image", "bench", "lint"):
        assert not any(step in dry_run(scratch, target) for step in INSTALLS), target


def test_a_changed_file_reinstalls_its_own_step(scratch):
    installed(scratch)
    os.utime(scratch / "requirements-k8s.txt", (2_000_000_001, 2_000_000_001))
    steps = dry_run(scratch, "test")
    assert "bash scripts/install_tools.sh\n" in steps and "pip install" not in steps
    assert not any(step in dry_run(scratch, "serve") for step in INSTALLS)
    os.utime(scratch / "requirements.txt", (2_000_000_002, 2_000_000_002))
    assert "-r requirements.txt" in dry_run(scratch, "serve")
