# Two commands matter: `make demo` (the incident, end to end, on embedded defaults) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ORACLE_DIR ?= ../shared/tools/prisma-oracle
PYTEST_ARGS ?=

.PHONY: setup system-deps oracle test torture demo bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Debian packages the tests need beyond the base image (PostgreSQL server binaries, Chromium for
# the Temporal UI browser test). Installed only when missing; needs root or passwordless sudo.
system-deps:
	@bash devstack/system-deps.sh

# The real Prisma CLI (offline), the judge of ledger compatibility; skipped where npm is absent.
oracle:
	@if [ -x "$(ORACLE_DIR)/setup.sh" ] && command -v npm >/dev/null; then \
	  [ -d "$${XDG_CACHE_HOME:-$$HOME/.cache}/prisma-oracle/node_modules/prisma" ] || "$(ORACLE_DIR)/setup.sh" >/dev/null; \
	else echo "prisma oracle not available: oracle comparisons will be skipped"; fi

test: setup system-deps oracle
	$(PY) -m pytest -q -m "not torture_full" $(PYTEST_ARGS)

torture: setup system-deps oracle
	$(PY) -m pytest -q -m "torture or torture_full" $(PYTEST_ARGS)

demo: setup
	$(PY) -m devstack.demo

bench: setup oracle
	$(PY) -m bench

clean:
	rm -rf .run test-artifacts bench/results
