# The two quick-start commands:  make run   and   make test  (and make lint, which CI runs too)
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin

.PHONY: run test test-runtime lint format install install-dev vendor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# mysqlclient needs MySQL/MariaDB client headers. Without them the suite still runs on SQLite
# and skips the MariaDB tests, except in CI (CI=true), where that is an error.
# The OpenAI Agents SDK's package is named `agents`, like this project's own: it is installed into
# a directory of its own, which only the subprocess of tests/test_agents_sdk.py puts on its path.
$(VENV)/.installed-dev: requirements.txt requirements-test.txt requirements-dev.txt requirements-mysql.txt requirements-agents-sdk.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --upgrade --target $(VENV)/agents-sdk -r requirements-agents-sdk.txt
	@$(BIN)/pip install --quiet -r requirements-mysql.txt || { \
	  if [ "$$CI" = "true" ]; then echo "error: mysqlclient did not build" >&2; exit 1; fi; \
	  echo "warning: mysqlclient did not build (apt-get install default-libmysqlclient-dev pkg-config); MariaDB tests will be skipped" >&2; }
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Start tracesite on the embedded defaults: http://localhost:8000
run: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seeddemo
	$(BIN)/daphne -b $(HOST) -p $(PORT) tracesite.asgi:application

## Run the whole test suite
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The server-side tests in a fresh venv of the runtime requirements and the test runner only:
## a module the server imports that only the dev requirements bring in fails here (CI runs it)
RUNTIME_VENV ?= var/runtime-venv
RUNTIME_TESTS := tests/test_imports.py tests/test_otlp_ingest.py tests/test_consumer.py tests/test_pages.py
test-runtime:
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/pip install --quiet -r requirements.txt -r requirements-mysql.txt -r requirements-test.txt
	$(RUNTIME_VENV)/bin/python -m pytest $(RUNTIME_TESTS) $(PYTEST_ARGS)

## Check style (ruff), formatting and types (mypy on agents/ and traces/)
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Apply the formatter and ruff's safe fixes
format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Install the browser libraries from the npm registry (frontend/package-lock.json) and copy
## them into static/vendor/, which the app serves itself (committed, so `make run` needs no npm)
NM := frontend/node_modules
vendor:
	cd frontend && npm ci --no-audit --no-fund
	rm -rf static/vendor && mkdir -p static/vendor/highlight static/vendor/licenses
	cp $(NM)/markdown-it/dist/markdown-it.min.js static/vendor/
	cp $(NM)/dompurify/dist/purify.es.mjs static/vendor/
	cp $(NM)/uplot/dist/uPlot.esm.js $(NM)/uplot/dist/uPlot.min.css static/vendor/
	cp $(NM)/@highlightjs/cdn-assets/es/core.min.js static/vendor/highlight/
	cp $(NM)/@highlightjs/cdn-assets/es/languages/sql.min.js $(NM)/@highlightjs/cdn-assets/es/languages/json.min.js static/vendor/highlight/
	cp $(NM)/@highlightjs/cdn-assets/styles/github.min.css static/vendor/highlight/
	cp $(NM)/markdown-it/LICENSE static/vendor/licenses/markdown-it.txt
	cp $(NM)/dompurify/LICENSE static/vendor/licenses/dompurify.txt
	cp $(NM)/uplot/LICENSE static/vendor/licenses/uplot.txt
	cp $(NM)/@highlightjs/cdn-assets/LICENSE static/vendor/licenses/highlight.js.txt

clean:
	rm -rf $(VENV) var staticfiles
