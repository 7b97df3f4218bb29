# The two commands a user needs: `make run` and `make test`. Both set up everything themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/config
PYTEST_ARGS ?=

.PHONY: install run test lint unit test-deep bench bench-quick clean proto

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/ratelimitd serve --config $(CONFIG)

lint: install
	$(BIN)/ruff check ratelimitd tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest -q tests/unit

test-deep: install
	RATELIMITD_DEEP=1 $(BIN)/pytest -q tests/property

# Regenerate the native API's Python code (committed, so installs need no code generator).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. proto/ratelimitd/v1/ratelimitd.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
