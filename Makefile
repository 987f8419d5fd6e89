# Two commands on a fresh machine: `make run` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/spg.py
WORKDIR ?= runs/default
# A persistent XLA compilation cache outside the checkout: reruns of the suite and of experiments
# skip most compilation (the first run on a machine fills it).
export JAX_COMPILATION_CACHE_DIR ?= $(HOME)/.cache/lmrl/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0.2

.PHONY: setup run test test-all lint bench clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m launch.main --config=$(CONFIG) --workdir=$(WORKDIR)

# The suite caches every compiled program (threshold 0 s): with tests/conftest.py's cheap XLA
# compiles most programs take under 0.2 s, and identical ones recur across tests and processes.
# One pytest process keeps ~1.1 of 2 cores busy (compiles are single-threaded), so the suite runs
# in TEST_WORKERS pytest-xdist workers, each taking whole test files (module fixtures run once),
# longest files first (tests/conftest.py orders them; --no-loadscope-reorder keeps that order).
# Bytecode is written and the checkout precompiled first (~1 s) even where the environment sets
# PYTHONDONTWRITEBYTECODE: otherwise every worker, CLI subprocess and notebook kernel compiles the
# package's modules from source again, and pytest rewrites every test module again on each run
# (collection took 9.4 s per worker without cached bytecode, 5.9 s with it).
TEST_WORKERS ?= 2
PYC := env -u PYTHONDONTWRITEBYTECODE
test: setup  # prints the suite's wall time (pytest's closing line states it too)
	@start=$$(date +%s); $(PYC) $(PY) -m compileall -q -x '/(\.venv|runs|build|\.git)/' . >/dev/null; \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(PYC) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall (JAX cache: $$JAX_COMPILATION_CACHE_DIR)"; \
	exit $$rc

test-all: setup
	$(PYC) $(PY) -m pytest -q -m ''

lint: setup
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

bench: setup
	$(PY) -m bench.mfu

clean:
	rm -rf runs .pytest_cache
