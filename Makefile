# keyledger: `make run` serves on embedded PostgreSQL and Redis; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean compat

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "keyledger needs Python 3.11 or newer: make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

## Serve on http://127.0.0.1:8000 with embedded PostgreSQL and Redis under ./.keyledger (Ctrl-C stops everything).
run: install
	$(BIN)/keyledger serve

## Lint, then unit, integration and end-to-end tests. Uses KEYLEDGER_TEST_DATABASE_URL / KEYLEDGER_TEST_REDIS_URL
## when set, otherwise starts embedded servers for the session.
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

## Load scenarios against a running server (make run in another terminal): make bench ARGS="--duration 20"
bench: install
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

## A strict JavaScript OAuth2 client (oauth4webapi) against a running server; needs Node.js 20+ and npm:
## make compat ISSUER=http://127.0.0.1:8000
ISSUER ?= http://127.0.0.1:8000
compat:
	cd compat/oauth4webapi && npm install --no-package-lock --silent && node flow.mjs $(ISSUER)
