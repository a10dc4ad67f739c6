# keybound — the two commands a new user needs:
#   make demo   server on embedded SQLite + demo devices, prints the decision table
#   make test   installs everything the suite needs (swtpm, SoftHSM2, Python deps) and runs it
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CHECK_VERSION := -c 'import sys; assert sys.version_info >= (3, 11), "keybound needs Python 3.11+"'

# The benchmarks (bench/README.md) run in their own venv on the distribution's Python, which
# is built with PGO and LTO, as the official Docker images are (pyenv's default build is not:
# keybound's server needs about 11 % more CPU on it).
BENCH_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
BENCH_VENV   := .venv-bench

.PHONY: demo test lint pytest system-deps openapi bench-venv clean

$(BIN)/python:
	$(PYTHON) $(CHECK_VERSION)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The TPM back end needs the TSS2 headers to build; with them (make test installs them),
# the demo also shows a device whose hardware key lives in a TPM 2.0 (swtpm).
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	if pkg-config --exists tss2-esys 2>/dev/null; then \
	  $(BIN)/pip install -q -e '.[tpm]'; else $(BIN)/pip install -q -e .; fi
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,tpm,pkcs11]'
	touch $@ $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(BIN)/keybound demo

system-deps:
	bash scripts/install-system-deps.sh

test: system-deps
	$(MAKE) $(VENV)/.installed-test
	$(MAKE) lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench

pytest: $(VENV)/.installed-test
	$(BIN)/python -m pytest

openapi: $(VENV)/.installed-base
	$(BIN)/python -m keybound.server.web.openapi > docs/openapi.json

bench-venv: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml
	$(BENCH_PYTHON) $(CHECK_VERSION)
	$(BENCH_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
