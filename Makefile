# The README names two targets: `make serve` and `make test`. Both install what they need.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
HOST    := $(PY) -m capsule_runtime.host.setup
ARGS    ?=

.PHONY: serve test check lint format typecheck bench host-serve host-test clean

serve: host-serve $(STAMP)          ## start tescape with its embedded defaults
	$(BIN)/tescape serve $(ARGS)

test: host-test $(STAMP) lint typecheck   ## install everything the tests need, then run them all
	$(BIN)/pytest $(ARGS)

host-serve:
	$(HOST) --profile serve

host-test:
	$(HOST) --profile test

$(STAMP):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: host-test $(STAMP)            ## API benchmarks; results go to docs/benchmarks.md by hand
	$(BIN)/python -m bench.api_bench $(ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
