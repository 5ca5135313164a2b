# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use. torch is pinned here (not in pyproject.toml)
# so that users keep their own CUDA builds.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $@

.PHONY: demo test bench
demo: $(BIN)/.installed
	$(BIN)/gaussmix demo --out gaussmix-demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench.py
