# Two commands on a fresh machine: `make install` (also run by every other target when
# needed) and `make test`. `make serve` runs the whole stack; `make bench` measures it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test bench lint clean

install: $(STAMP)

# The stamp depends on the requirement files, so editing them reinstalls.
$(STAMP): requirements.txt requirements-dev.txt scripts/install_system.sh
	bash scripts/install_system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

serve: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/supervisord -n -c supervisor.conf

test: install
	$(VENV)/bin/ruff check app tests scripts gunicorn_conf.py
	$(VENV)/bin/python -m pytest

bench: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m scripts.bench

lint: install
	$(VENV)/bin/ruff check app tests scripts gunicorn_conf.py
	$(VENV)/bin/ruff format --check app tests scripts gunicorn_conf.py

clean:
	rm -rf $(VENV) run .pytest_cache
