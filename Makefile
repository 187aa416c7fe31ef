# The two commands of the README (make demo, make test) set themselves up: they create .venv
# and install the project into it when pyproject.toml is newer than the last install.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Numba's cache notices a change to a kernel's own file, not to a kernel it calls in another
# file (bandit/kernels/single.py calls choice.py's): a stale caller kept the old callee's code.
# So the cache lives in a folder named by a hash of every file with kernels.
KERNEL_SOURCES := $(sort $(shell find bandit simulators benchmarks -name '*.py'))
export NUMBA_CACHE_DIR := $(CURDIR)/.numba-cache/$(shell cat $(KERNEL_SOURCES) | cksum | cut -d' ' -f1)

.PHONY: demo test test-nojit bench install lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

install: $(VENV)/.installed-dev

demo: $(VENV)/.installed-dev
	$(BIN)/cmab demo --out reports/demo

# ruff, mypy (pydantic plugin) and import-linter's layer contracts, all configured in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check bandit streams simulators benchmarks tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

# Kernel logic as plain Python (Numba off), so coverage sees inside the kernels.
test-nojit: $(VENV)/.installed-dev
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q tests/bandit/kernels/test_kernels.py --cov=bandit.kernels --cov-report=term
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q tests/simulators/offline/test_ope.py -k kernel --cov=simulators.offline.ope --cov-report=term

# Every benchmark (pytest-benchmark; benchmarks/pytest.ini keeps them out of make test), then
# the report: ratios, targets, and the README's performance table (about 15 minutes here).
BENCH_JSON := benchmarks/results/bench.json
bench: $(VENV)/.installed-bench
	mkdir -p $(dir $(BENCH_JSON))
	$(BIN)/python -m pytest benchmarks --benchmark-json=$(BENCH_JSON)
	$(BIN)/python -m benchmarks.report $(BENCH_JSON) --readme README.md
