# Each command installs only what it runs, the first time it is needed:
#   make install   serving: nginx (apt) and the virtualenv .venv with requirements.txt
#   make serve     make install, then the whole stack (supervisord: gunicorn and nginx)
#   make image     podman and its helpers, mmdebstrap (apt); no virtualenv: the build is podman's
#   make test      make install + requirements-dev.txt, the tests' apt packages and the tool
#                  venvs (scripts/install_tools.sh), then ruff and pytest
# scripts/install_system.sh GROUP installs a group's apt packages that are missing (as root;
# `--list GROUP` prints them). Each install step leaves a stamp in .venv, made again when a
# file it installs from changes.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
TEST_STAMP := $(VENV)/.installed-test
IMAGE_STAMP := $(VENV)/.installed-image

.PHONY: install serve image test bench soak memory lint clean
# One step at a time, even under -j: the serve and dev steps both pip-install into .venv.
.NOTPARALLEL:

install: $(SERVE_STAMP)

# The virtualenv itself, made when missing. python3-venv (Debian's home of ensurepip) first.
$(PY):
	bash scripts/install_system.sh venv
	python3 -m venv $(VENV)

# Serving: nginx, and the runtime packages (gunicorn and supervisord are among them).
$(SERVE_STAMP): requirements.txt scripts/install_system.sh | $(PY)
	bash scripts/install_system.sh serve
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Test, lint and bench tools in the same venv (requirements-dev.txt includes requirements.txt).
# No apt packages: `make lint` needs only ruff.
$(DEV_STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# What `make bench` runs beside the stack: ab, redis-server and libb64 (apt), and the OIP
# clients' venv (.venv-clients: tritonclient, perf_analyzer). The bench itself installs its
# peers on first use, each with pip --target into bench/peers/ (never .venv): LitServe 0.2.19,
# BentoML 1.4.40 and Ray Serve 2.60.0 (about 700 MB together).
$(BENCH_STAMP): scripts/install_system.sh scripts/install_tools.sh requirements-clients.txt | $(PY)
	bash scripts/install_system.sh bench
	bash scripts/install_tools.sh clients
	touch $@

# What the tests run: the serve, image and bench packages and the tests' own (Chromium and
# chromedriver, iproute2, curl, openssl; scripts/install_system.sh lists them), and every tool
# venv (.venv-clients, .venv-k8s, .venv-checkov). tests/test_container.py builds the image.
TOOLS := requirements-clients.txt requirements-k8s.txt requirements-checkov.txt scripts/install_tools.sh
$(TEST_STAMP): scripts/install_system.sh $(TOOLS) | $(PY)
	bash scripts/install_system.sh test
	bash scripts/install_tools.sh
	touch $@

# The image build runs in podman from the Dockerfile; nothing of the host's venv is used, so
# only the stamp's folder is made here.
$(IMAGE_STAMP): scripts/install_system.sh
	bash scripts/install_system.sh image
	mkdir -p $(VENV)
	touch $@

# Runs in the foreground; supervisord finds gunicorn and nginx on PATH (.venv/bin first).
serve: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/supervisord -n -c supervisor.conf

# The container image, built with podman (no Docker daemon needed). Without a reachable
# registry, scripts/base_image.sh makes the python:3.11-slim stand-in offline. Offline hosts
# also want FETCH_WEIGHTS=skip (mount a checkpoint at run time). docs/deployment.md, "Docker".
TORCH_VARIANT ?= cuda
FETCH_WEIGHTS ?= imagenet
IMAGE ?= localhost/classifier:latest
image: $(IMAGE_STAMP)
	IMAGE=$(IMAGE) TORCH_VARIANT=$(TORCH_VARIANT) FETCH_WEIGHTS=$(FETCH_WEIGHTS) scripts/image.sh

# torchvision imports torch._dynamo, which imports Triton; Triton's nanobind module prints
# "leaked" reports at interpreter exit, after pytest's summary line, which CI reads last.
# Those lines are dropped; pipefail keeps pytest's exit status.
NANOBIND_NOISE := ^(nanobind: | - leaked | - \.\.\. skipped remainder|See https://nanobind)

test: install $(DEV_STAMP) $(TEST_STAMP)
	$(VENV)/bin/ruff check app tests scripts gunicorn_conf.py
	set -o pipefail; $(VENV)/bin/python -m pytest -p no:cacheprovider 2>&1 | grep -Ev '$(NANOBIND_NOISE)'

# Throughput/latency report: bench/out/report.md + chart.png (about 6 minutes on 2 cores).
# Needs ab, redis-server and perf_analyzer (.venv-clients), and matplotlib/scikit-image (dev).
bench: install $(DEV_STAMP) $(BENCH_STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m scripts.bench

# Thousands of mixed good and bad requests through nginx: errors by kind, worker memory growth,
# file descriptors and temp files left (bench/out/soak.md). Exits 1 when a target is missed.
# The stack, driven with requests and watched with psutil (dev).
soak: install $(DEV_STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m scripts.soak

# PSS of the gunicorn tree for 1, 2 and 4 workers, with and without preload.
# gunicorn alone (no nginx), measured with psutil and requests (dev).
memory: install $(DEV_STAMP)
	$(PY) -m scripts.memory

# ruff only (dev); nothing is served.
lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check app tests scripts gunicorn_conf.py
	$(VENV)/bin/ruff format --check app tests scripts gunicorn_conf.py

clean:
	rm -rf $(VENV) .venv-clients .venv-k8s .venv-checkov .pytest_cache bench/out
	find run -mindepth 1 ! -name .gitkeep -delete
