# Two commands matter: `make run` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
RUN_DIR := .run

.PHONY: install run test check bench clean tools store fleet compose-up compose-down compose-smoke

install: $(STAMP)

$(STAMP): pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=68' wheel
	$(PY) -m pip install -q -e '.[embedded,test,plot]'
	touch $(STAMP)

# The request path compiled with mypyc (gateway/build.py lists the modules) into a copy of the package
# under build/compiled: `make run` and `make bench` serve it (PYTHONPATH), the source tree
# stays pure Python, and `make test` checks both.
COMPILED := build/compiled
SOURCES := $(shell find gateway -name '*.py') setup.py pyproject.toml

.PHONY: compiled
compiled: $(COMPILED)/.built

$(COMPILED)/.built: $(STAMP) $(SOURCES)
	rm -rf build && mkdir -p build
	GATEWAY_COMPILE=1 $(PY) -m pip install --no-deps --no-build-isolation --target $(COMPILED) . \
	  > build/compile.log 2>&1 || { tail -20 build/compile.log; rm -rf $(COMPILED); exit 1; }
	touch $@

# Without a C compiler, `make run` serves the pure-Python build (and says so).
run: store
	@$(MAKE) --no-print-directory compiled || echo "run: mypyc build failed: serving pure Python"
	PYTHONPATH=$$(test -f $(COMPILED)/.built && echo $(COMPILED))$${PYTHONPATH:+:$$PYTHONPATH} \
	$(VENV)/bin/mme-gateway serve --host $(HOST) --port $(PORT) \
	  --model-store $(RUN_DIR)/store --cache-dir $(RUN_DIR)/cache --print-examples

# HAProxy, for the fleet tests and `make fleet` (Debian's package).
tools:
	@command -v haproxy >/dev/null || (apt-get update -qq && apt-get install -y -qq haproxy)

# Every test on the source tree (pure Python), then on the compiled build the compiled
# modules' own tests and the request path end to end (gateway/build.py lists both).
COMPILED_TESTS = $(shell $(PYTHON) gateway/build.py tests)

# The whole suite; the protocol's end-to-end tests again with two data planes (make
# test-workers runs every end-to-end test that way); the request path's tests on the build.
test: install tools compiled
	$(VENV)/bin/pytest
	MME_WORKERS=2 $(VENV)/bin/pytest -p no:cacheprovider $(WORKERS_TESTS)
	EXPECT_REQUEST_PATH=compiled PYTHONPATH=$(COMPILED) \
	  $(VENV)/bin/pytest --import-mode=append -p no:cacheprovider $(COMPILED_TESTS)

WORKERS_TESTS := tests/integration/test_sagemaker_runtime.py tests/integration/test_kserve_v2.py \
  tests/integration/test_access_control.py tests/integration/test_metrics.py \
  tests/integration/test_cold_start.py

# Every end-to-end test again with two data planes per gateway (--workers 2).
.PHONY: test-workers
test-workers: install tools
	MME_WORKERS=2 $(VENV)/bin/pytest tests/integration -m "not soak"

check: install
	$(VENV)/bin/ruff format --check gateway tests bench deploy
	$(VENV)/bin/ruff check gateway tests bench deploy
	$(VENV)/bin/mypy gateway tests bench

store: install
	rm -rf $(RUN_DIR)/store && mkdir -p $(RUN_DIR)/store
	for m in triton_repo_template/examples/*/; do \
	  $(VENV)/bin/mme-gateway package "$$m" "$(RUN_DIR)/store/$$(basename $$m).tar.gz" || exit 1; done

fleet: store tools
	$(PY) -m deploy.fleet --port $(PORT) --store $(RUN_DIR)/store

# Benchmarks are modules of the bench package (python -m bench.<name>), run from this checkout.
BENCH := PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -P -m

bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) $(RUN_DIR) build

.PHONY: bench-patterns
bench-patterns: install
	$(BENCH) bench.patterns

# A short shifting, bursty trace through the real gateway, per policy, against the simulator.
.PHONY: bench-replay
bench-replay: install
	$(BENCH) bench.replay

# The gateway's own costs as loaded models add up (N = 10, 100, 300 small models; slow).
.PHONY: bench-scale
bench-scale: install
	$(BENCH) bench.scale $(if $(COUNTS),--counts $(COUNTS))

.PHONY: bench-fleet
bench-fleet: install tools
	$(BENCH) bench.fleet

# The chaos soak: faults on a schedule under load; non-zero exit if an aim is missed.
.PHONY: soak
soak: install
	mkdir -p bench/results
	SOAK_SECONDS=$${SOAK_SECONDS:-120} $(BENCH) tests.soak --json bench/results/soak.json
	SOAK_SECONDS=$${SOAK_SECONDS:-120} SOAK_WORKERS=2 $(BENCH) tests.soak \
	  --json bench/results/soak-workers2.json

# The per-core ceiling: one gateway process in front of an upstream that costs ~nothing, on the
# compiled request path (as `make run` serves it).
.PHONY: bench-ceiling
bench-ceiling: install compiled
	PYTHONPATH=$(CURDIR)/$(COMPILED):$(CURDIR) $(PY) -P -m bench.ceiling $(if $(WORKERS),--workers $(WORKERS))

# docker-compose.yml on this machine's Docker engine, unchanged (deploy/stack.sh): installs the
# engine and Compose v2 if missing, builds stand-ins for images no registry here serves.
compose-up: install
	bash deploy/stack.sh up

compose-down:
	bash deploy/stack.sh down

# up, the checks of tests/deploy/test_stack.py against the running stack, down.
compose-smoke: install
	bash deploy/stack.sh smoke
