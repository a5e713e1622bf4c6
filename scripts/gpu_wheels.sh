#!/usr/bin/env bash
# Wheels for the GPU machine (docs/deployment.md, "GPU check"): what serving needs beyond that
# machine's python3, which already has torch, torchvision, pillow, numpy, psutil, requests and
# prometheus-client. The virtualenv can't travel (gigabytes; the device tool carries 64 MiB),
# so these go as wheels into .whl/ (git-ignored here through .git/info/exclude), and
# scripts/gpu_check.sh installs them there with --no-index.
#
#   scripts/gpu_wheels.sh      then on the device tool: carry [".whl"], command scripts/gpu_check.sh
#
# Versions are the ones installed in .venv, the ones the tests ran against. PyPI only.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
# Flask with its pure-Python dependencies, gunicorn, pydantic with its compiled core, redis.
names="flask werkzeug itsdangerous blinker click jinja2 gunicorn pydantic pydantic-core annotated-types
typing-inspection typing-extensions redis"
pins=$("$py" -c 'import importlib.metadata as m, sys; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' $names)
rm -rf .whl && mkdir .whl
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
# The GPU machine's python3 is CPython 3.12 on x86-64.
# shellcheck disable=SC2086
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl $pins
ls .whl
du -sh .whl
