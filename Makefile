# The two commands of the README: `make test` and `make demo`. Both build .venv and start the
# project's own Redis, Redis Cluster and PostgreSQL under .run/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv services browser down lint test demo bench clean
CHROMIUM := /usr/bin/chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

services: venv
	$(BIN)/flashsale services up

# The queue page's browser test drives Debian's headless Chromium through Playwright (never
# `playwright install`): installed here when missing and root; otherwise the test fails saying so.
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the browser test"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "browser: $(CHROMIUM) is missing and this is not root; install Debian's chromium" \
	    "package (apt-get install chromium) or the browser test fails" >&2; \
	fi

down: venv
	$(BIN)/flashsale services down

# ruff (bare `engine`-style imports refused), mypy --strict, and the layer contracts of
# import-linter (pyproject.toml [tool.importlinter]).
lint: venv
	$(BIN)/ruff check flashsale engine lua gateway reconciler store loadtests tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: services browser lint
	$(BIN)/pytest -q -p no:cacheprovider

demo: services
	$(BIN)/flashsale demo

# Every benchmark, one table; a quick run: make bench BENCH_ARGS="--seconds 2 --requests 5000"
bench: services
	$(BIN)/flashsale bench all $(BENCH_ARGS)

clean: down
	rm -rf .run $(VENV)
