# Two commands on a fresh machine: `make install` (also run by every other target when
# needed) and `make test`. `make serve` runs the whole stack; `make bench` measures it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve image test bench soak memory lint clean

install: $(STAMP)

# The stamp depends on the requirement files, so editing them reinstalls.
TOOLS := requirements-clients.txt requirements-k8s.txt requirements-checkov.txt scripts/install_tools.sh
$(STAMP): requirements.txt requirements-dev.txt scripts/install_system.sh $(TOOLS)
	bash scripts/install_system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	bash scripts/install_tools.sh
	touch $(STAMP)

serve: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/supervisord -n -c supervisor.conf

# The container image, built with podman (no Docker daemon needed). Without a reachable
# registry, scripts/base_image.sh makes the python:3.11-slim stand-in offline. Offline hosts
# also want FETCH_WEIGHTS=skip (mount a checkpoint at run time). README, "Docker".
TORCH_VARIANT ?= cuda
FETCH_WEIGHTS ?= imagenet
IMAGE ?= localhost/classifier:latest
image: install
	IMAGE=$(IMAGE) TORCH_VARIANT=$(TORCH_VARIANT) FETCH_WEIGHTS=$(FETCH_WEIGHTS) scripts/image.sh

# torchvision imports torch._dynamo, which imports Triton; Triton's nanobind module prints
# "leaked" reports at interpreter exit, after pytest's summary line, which CI reads last.
# Those lines are dropped; pipefail keeps pytest's exit status.
NANOBIND_NOISE := ^(nanobind: | - leaked | - \.\.\. skipped remainder|See https://nanobind)

test: install
	$(VENV)/bin/ruff check app tests scripts gunicorn_conf.py
	set -o pipefail; $(VENV)/bin/python -m pytest -p no:cacheprovider 2>&1 | grep -Ev '$(NANOBIND_NOISE)'

# Throughput/latency report: bench/out/report.md + chart.png (about 6 minutes on 2 cores).
bench: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m scripts.bench

# Thousands of mixed good and bad requests through nginx: errors by kind, worker memory growth,
# file descriptors and temp files left (bench/out/soak.md). Exits 1 when a target is missed.
soak: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m scripts.soak

# PSS of the gunicorn tree for 1, 2 and 4 workers, with and without preload.
memory: install
	$(PY) -m scripts.memory

lint: install
	$(VENV)/bin/ruff check app tests scripts gunicorn_conf.py
	$(VENV)/bin/ruff format --check app tests scripts gunicorn_conf.py

clean:
	rm -rf $(VENV) .venv-clients .venv-k8s .venv-checkov .pytest_cache bench/out
	find run -mindepth 1 ! -name .gitkeep -delete
