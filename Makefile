# keybound — the two commands a new user needs:
#   make demo   server on embedded SQLite + demo devices, prints the decision table
#   make test   installs everything the suite needs (swtpm, SoftHSM2, Python deps) and runs it
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CHECK_VERSION := -c 'import sys; assert sys.version_info >= (3, 11), "keybound needs Python 3.11+"'
SYSTEM_DEPS   := PYTHON=$(PYTHON) bash scripts/install-system-deps.sh

# Every venv installs the versions pinned in requirements/constraints.txt (`make constraints`
# refreshes it), pip itself and the build tools in pip's build environments included, so a new
# release of anything cannot turn a fresh clone red.
CONSTRAINTS := requirements/constraints.txt
PINNED      := -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS)

# The benchmarks (bench/README.md) run in their own venv on the distribution's Python, which
# is built with PGO and LTO, as the official Docker images are (pyenv's default build is not:
# keybound's server needs about 11 % more CPU on it).
BENCH_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
BENCH_VENV   := .venv-bench

# `make constraints` resolves with uv, in a venv of its own
UV_VERSION := 0.13.9
LOCK_VENV  := .venv-lock

.PHONY: demo test lint pytest system-deps hooks openapi bench-venv constraints fresh-check clean

# A venv with the pinned pip (which knows --build-constraint). A failed `python -m venv` leaves
# no half-made venv behind for the next run to take as made.
$(BIN)/python:
	$(PYTHON) $(CHECK_VERSION)
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }
	$(BIN)/pip install -q -c $(CONSTRAINTS) --upgrade pip

# The demo needs the server; with what tpm2-pytss builds against (install-system-deps.sh
# brings it as root), it also shows a device whose hardware key lives in a TPM 2.0 (swtpm).
$(VENV)/.installed-demo: pyproject.toml $(CONSTRAINTS)
	$(SYSTEM_DEPS) demo
	$(MAKE) $(BIN)/python
	if $(SYSTEM_DEPS) tpm-ready; then extras=server,tpm; else extras=server; fi; \
	  $(BIN)/pip install -q $(PINNED) -e ".[$$extras]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q $(PINNED) -e '.[test,tpm,pkcs11]'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/keybound demo

system-deps:
	$(SYSTEM_DEPS) test

test: system-deps
	$(MAKE) $(VENV)/.installed-test
	$(MAKE) lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench

pytest: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# Contributors: pre-commit (the [dev] extra) and its git hook; the hooks run this venv's ruff
# and mypy, the versions the constraints pin
hooks: system-deps
	$(MAKE) $(VENV)/.installed-test
	$(BIN)/pip install -q $(PINNED) -e '.[dev]'
	$(BIN)/pre-commit install

openapi: $(VENV)/.installed-demo
	$(BIN)/python -m keybound.server.web.openapi > docs/openapi.json

bench-venv: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(BENCH_PYTHON) $(CHECK_VERSION)
	$(BENCH_PYTHON) -m venv $(BENCH_VENV) || { rm -rf $(BENCH_VENV); exit 1; }
	$(BENCH_VENV)/bin/pip install -q -c $(CONSTRAINTS) --upgrade pip
	$(BENCH_VENV)/bin/pip install -q $(PINNED) -e '.[bench]'
	touch $@

# Refresh the pins: every extra, the newest releases that fit pyproject.toml, for every Python
# from 3.11 and every platform (markers). Then run `make test` and commit the file.
constraints:
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile --quiet --upgrade --universal --python-version 3.11 \
	  --all-extras --custom-compile-command 'make constraints' -o $(CONSTRAINTS) \
	  pyproject.toml requirements/build.in

# Manual check, not part of `make test` or CI: both README commands in a minimal Debian
# bookworm root made from Debian's mirror (root; about 10 minutes on 2 cores;
# scripts/fresh-check.sh)
fresh-check:
	bash scripts/fresh-check.sh

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(LOCK_VENV) .pytest_cache .mypy_cache .ruff_cache
