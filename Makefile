# wiraya-outbox: every command creates .venv first when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency version comes from uv.lock, exported with hashes to requirements*.txt.
UV := $(BIN)/uv
EXPORT := $(UV) export --quiet --frozen --no-emit-project --format requirements-txt
LOCK_FLAGS ?=

.PHONY: help install lock test lint demo bench bench-smoke simulate docs

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with the project and its test tools, at the locked versions

$(STAMP): pyproject.toml requirements-dev.txt requirements-build.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt -r requirements-build.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

lock: $(STAMP)  ## re-lock after editing pyproject.toml (LOCK_FLAGS=--upgrade: newest allowed)
	$(UV) lock --quiet $(LOCK_FLAGS)
	$(EXPORT) --no-default-groups -o requirements.txt
	$(EXPORT) --no-default-groups --extra dev -o requirements-dev.txt
	$(EXPORT) --no-default-groups --extra tracing -o requirements-tracing.txt
	$(EXPORT) --only-group build -o requirements-build.txt

demo: $(STAMP)  ## the outbox end to end on SQLite, a filesystem broker and the sandbox (no servers)
	$(BIN)/outbox demo

test: $(STAMP)  ## run the whole test suite (unit, integration, end-to-end)
	$(BIN)/pytest

# SEEDS random runs from a random first seed (START=K to choose it), SEED=S to replay one, or
# SCENARIO=name to run a named fault plan (tests/simulation/scenarios.py); DB=sqlite (default),
# postgresql or both.
SEEDS ?= 200
DB ?= sqlite
simulate: $(STAMP)  ## the deterministic simulation: SEEDS=N runs, SEED=S replays one, DB=sqlite|postgresql|both
	PYTHONHASHSEED=0 $(BIN)/python -m tests.simulation --db $(DB) $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(SEED),--seed $(SEED),--seeds $(SEEDS) $(if $(START),--start $(START)))

bench: $(STAMP)  ## the benchmarks (~30 min; needs PostgreSQL and redis-server), printing their figures
	$(BIN)/python bench/bench_producer.py
	$(BIN)/python bench/bench_screen.py
	$(BIN)/python bench/bench_drain.py
	$(BIN)/python bench/bench_policy.py
	$(BIN)/python bench/bench_tenants.py
	$(BIN)/python bench/bench_bloat.py
	$(BIN)/python bench/bench_peers.py
	$(BIN)/python bench/bench_profile.py
	$(BIN)/python bench/bench_latency.py
	$(BIN)/python bench/bench_gate.py
	$(BIN)/python bench/bench_lanes.py
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_sandbox.py
	$(BIN)/python bench/bench_ops_reads.py
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_footprint.py
	$(BIN)/python bench/bench_reports.py
	$(BIN)/python bench/bench_receiver_limits.py
	$(BIN)/python bench/bench_migrate.py

bench-smoke: $(STAMP)  ## every benchmark once at a tiny size: each runs and prints (no figure is checked)
	$(BIN)/python bench/smoke.py

docs: $(STAMP)  ## build the documentation site into site/ (strict: a broken link or anchor fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)  ## ruff, mypy and the import boundaries
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
