# Runix: `make up` starts the platform, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= .runix
PORT ?= 8000
ROUTER_PORT ?= 8080
# Test processes (pytest-xdist workers): 2 fits the 2-core machines CI runs on. Each test file stays on one worker
# (--dist loadfile): its module-scoped servers start once, and its test_zz tests, which restart them, still run last.
TEST_WORKERS ?= 2

.PHONY: up install install-test test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	./scripts/system-deps.sh run
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	./scripts/system-deps.sh test
	$(BIN)/pip install -q -e '.[test]'

up: install
	RUNIX_DATA_DIR=$(DATA_DIR) $(BIN)/runix server --port $(PORT) --router-port $(ROUTER_PORT)

lint: install-test
	$(BIN)/ruff check .

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install-test
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache
