# wiraya-outbox: every command creates .venv first when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install test lint demo bench

help:  ## list the commands
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with the project and its test tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## the outbox end to end on SQLite, a filesystem broker and the sandbox (no servers)
	$(BIN)/outbox demo

test: $(STAMP)  ## run the whole test suite (unit, integration, end-to-end)
	$(BIN)/pytest

bench: $(STAMP)  ## the benchmarks (~10 min; needs PostgreSQL and redis-server), printing their figures
	$(BIN)/python bench/bench_producer.py
	$(BIN)/python bench/bench_drain.py
	$(BIN)/python bench/bench_latency.py
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_sandbox.py
	$(BIN)/python bench/bench_receipts.py

lint: $(STAMP)  ## ruff, mypy and the import boundaries
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
