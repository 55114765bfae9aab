# lit-llm: `make quickstart` (set up + pretrain a small GPT), `make test` (set up + tests), `make lint` (ruff).
# `make help` lists all.
PY ?= python3
VENV ?= .venv
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (override e.g. TORCH_SPEC="torch==2.14.1")
TORCH_SPEC ?= torch==2.13.0
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.lit_llm_installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install quickstart lint test test-slow test-all clean clean-cache

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv (if missing) and install torch, then lit_llm[dev]

$(STAMP): pyproject.toml
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

quickstart: install ## pretrain a small GPT on the bundled corpus (< 3 min on 2 CPU cores)
	$(PYTHON) pipelines/train.py experiment=quickstart

lint: install ## ruff: pyflakes, import order, syntax errors ([tool.ruff] in pyproject.toml)
	$(VENV)/bin/ruff check .

test: install ## the test suite (fast tests, < 10 min on 2 CPU cores)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-slow: install ## only the tests marked slow
	$(PYTHON) -m pytest -m slow $(PYTEST_ARGS)

test-all: install ## every test, slow included
	$(PYTHON) -m pytest -m "" $(PYTEST_ARGS)

clean-cache: ## delete tokenizer and tokenized-data caches (always safe)
	rm -rf .cache

clean: clean-cache ## delete the venv, caches and run outputs
	rm -rf $(VENV) outputs .pytest_cache
