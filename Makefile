# The two commands of the README: `make test` and `make demo`. Both build .venv and start the
# project's own Redis, Redis Cluster and PostgreSQL under .run/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv services browser promtool down lint test demo bench clean
CHROMIUM := /usr/bin/chromium
PROMTOOL := /usr/bin/promtool

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

# The monitoring tests (tests/test_deploy.py, tests/test_services_prometheus.py) run Debian's
# promtool and prometheus (package `prometheus`): installed here when missing and root, as above.
promtool:
	@if [ -x $(PROMTOOL) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's prometheus for the monitoring tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
	  echo "promtool: $(PROMTOOL) is missing and this is not root; install Debian's prometheus" \
	    "package (apt-get install prometheus) or the monitoring tests fail" >&2; \
	fi

down: venv
	$(BIN)/flashsale services down

# ruff (bare `engine`-style imports refused), mypy --strict, the layer contracts of
# import-linter (pyproject.toml [tool.importlinter]), and hadolint on the Dockerfile.
lint: venv
	$(BIN)/ruff check flashsale engine lua gateway reconciler store loadtests tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint Dockerfile

test: services browser promtool lint
	$(BIN)/pytest -q -p no:cacheprovider

demo: services
	$(BIN)/flashsale demo

# Every benchmark, one table; a quick run: make bench BENCH_ARGS="--seconds 2 --requests 5000"
bench: services
	$(BIN)/flashsale bench all $(BENCH_ARGS)

clean: down
	rm -rf .run $(VENV)
