# Every target works on a fresh clone: `.venv` is created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv test lint lock demo bench soak cluster-build cluster-up cluster-down clean

# Exact versions with hashes from the lock file (`make lock` regenerates it from pyproject.toml).
$(BIN)/activate: pyproject.toml requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements-test.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(BIN)/activate

venv: $(BIN)/activate

E2E ?= 1
## test: install everything the suite needs, then run the whole suite (store, unit, cluster),
## then the whole system on the local cluster's real node (hack/e2e-local.sh; E2E=0 skips it).
test: lint
	bash hack/ensure-postgres.sh
	bash hack/ensure-promtool.sh >/dev/null
	bash hack/ensure-promtool.sh --server >/dev/null
	$(BIN)/pytest $(PYTEST_ARGS)
	@if [ "$(E2E)" = 1 ]; then bash hack/e2e-local.sh; else echo "E2E=0: whole-system scenario skipped"; fi

SHELL_SCRIPTS := $(wildcard hack/*.sh hack/e2e/*.sh hack/images/*.sh)
## lint: ruff, the layering contracts (import-linter) and mypy (strict) on the Python,
## shellcheck on the scripts that build and run the clusters, checkov (pinned) over the chart,
## the kustomize base, the examples and what the operator renders (skips: hack/checkov_scan.py).
lint: venv
	$(BIN)/ruff check operator tests testing benchmarks hack
	$(BIN)/lint-imports
	$(BIN)/mypy
	@bash hack/ensure-packages.sh shellcheck:shellcheck
	shellcheck -x -S warning $(SHELL_SCRIPTS)
	$(BIN)/python hack/checkov_scan.py

LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
  --no-emit-index-url --no-emit-find-links
## lock: re-resolve the dependency lock files from pyproject.toml (pip-tools).
lock: venv
	$(BIN)/pip install --quiet pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(LOCK_FLAGS) --output-file requirements.lock pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(LOCK_FLAGS) --extra test --output-file requirements-test.lock pyproject.toml

## demo: the main job end to end on the embedded SQLite default.
demo: venv
	$(BIN)/python hack/demo.py

cluster-build:
	bash hack/local-cluster.sh build

cluster-up:
	bash hack/local-cluster.sh up

cluster-down:
	bash hack/local-cluster.sh down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

## bench: the benchmarks (matplotlib, PgQueuer, Procrastinate are benchmark-only),
## appended to benchmarks/RESULTS.md. BENCH_ARGS=--full for the 1M/10M curves.
bench: venv
	bash hack/ensure-postgres.sh
	$(BIN)/pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

SOAK_SECONDS ?= 300
## soak: chaos soak on the local control plane (SOAK_SECONDS=600 longer, SOAK_SEED=N replays);
## `make test` runs it too, with a 45 s budget.
soak: venv
	bash hack/ensure-postgres.sh
	bash hack/ensure-promtool.sh >/dev/null
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED) $(BIN)/pytest tests/cluster/test_soak.py -q -s -p no:cacheprovider

include hack/packaging-make.mk
