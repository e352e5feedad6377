# The two commands of the README: `make test` and `make demo`. Both build .venv and start the
# project's own Redis, Redis Cluster and PostgreSQL under .run/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv services down lint test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

services: venv
	$(BIN)/flashsale services up

down: venv
	$(BIN)/flashsale services down

lint: venv
	$(BIN)/ruff check engine gateway reconciler loadtests tests
	$(BIN)/mypy

test: services lint
	$(BIN)/pytest -q -p no:cacheprovider

demo: services
	$(BIN)/flashsale demo

bench: services
	$(BIN)/flashsale bench engine

clean: down
	rm -rf .run $(VENV)
