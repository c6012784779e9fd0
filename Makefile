# Two commands matter: `make run` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
RUN_DIR := .run

.PHONY: install run test check bench clean tools store fleet

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[embedded,test,plot]'
	touch $(STAMP)

run: store
	$(VENV)/bin/mme-gateway serve --host $(HOST) --port $(PORT) \
	  --model-store $(RUN_DIR)/store --cache-dir $(RUN_DIR)/cache --print-examples

# HAProxy, for the fleet tests and `make fleet` (Debian's package).
tools:
	@command -v haproxy >/dev/null || (apt-get update -qq && apt-get install -y -qq haproxy)

test: install tools
	$(VENV)/bin/pytest

check: install
	$(VENV)/bin/ruff format --check gateway tests
	$(VENV)/bin/ruff check gateway tests
	$(VENV)/bin/mypy gateway tests

store: install
	rm -rf $(RUN_DIR)/store && mkdir -p $(RUN_DIR)/store
	for m in triton_repo_template/examples/*/; do \
	  $(VENV)/bin/mme-gateway package "$$m" "$(RUN_DIR)/store/$$(basename $$m).tar.gz" || exit 1; done

fleet: store tools
	$(PY) -m deploy.fleet --port $(PORT) --store $(RUN_DIR)/store

bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) $(RUN_DIR)

.PHONY: bench-patterns
bench-patterns: install
	$(PY) bench/patterns.py

.PHONY: bench-fleet
bench-fleet: install tools
	$(PY) bench/fleet.py

# The chaos soak: faults on a schedule under load; non-zero exit if an aim is missed.
.PHONY: soak
soak: install
	SOAK_SECONDS=$${SOAK_SECONDS:-120} $(PY) bench/soak.py --json bench/results/soak.json

# The per-core ceiling: one gateway process in front of an upstream that costs ~nothing.
.PHONY: bench-ceiling
bench-ceiling: install
	$(PY) bench/ceiling.py
