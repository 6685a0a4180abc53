# Every target works on a fresh clone: `.venv` is created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv test lint demo cluster-build cluster-up cluster-down clean

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/activate

venv: $(BIN)/activate

## test: install everything the suite needs, then run the whole suite (store, unit, cluster).
test: venv
	bash hack/ensure-postgres.sh
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check operator tests benchmarks

## demo: the main job end to end on the embedded SQLite default.
demo: venv
	bash hack/demo.sh

cluster-build:
	bash hack/local-cluster.sh build

cluster-up:
	bash hack/local-cluster.sh up

cluster-down:
	bash hack/local-cluster.sh down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
