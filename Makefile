SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN    := gen
export PYTHONPATH := $(CURDIR):$(CURDIR)/$(GEN)

.PHONY: help venv proto proto-check lint typecheck test test-unit test-integration test-e2e fuzz \
        up down status demo preflight migrate load drill bench ci clean envdoc

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	@touch $@

venv: $(STAMP) ## create .venv and install pinned dependencies

$(GEN)/.stamp: $(STAMP) $(PROTOS)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	$(PY) tools/init_packages.py $(GEN)
	@touch $@

proto: $(GEN)/.stamp ## generate Python code from protos/ into gen/

proto-check: $(STAMP) ## fail if protos do not lint or gen/ is stale
	cd protos && $(abspath $(VENV))/bin/buf lint
	tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	$(PY) tools/init_packages.py $$tmp && \
	diff -r -x .stamp -x __pycache__ $$tmp $(GEN) && rm -rf $$tmp

lint: proto ## buf lint, ruff
	cd protos && $(abspath $(VENV))/bin/buf lint
	$(VENV)/bin/ruff check .

typecheck: proto ## mypy
	$(VENV)/bin/mypy

test: proto ## the whole suite: unit, integration (real PostgreSQL and Redis), e2e
	$(PY) tools/devstack.py ensure >/dev/null
	set -a && source .run/devstack.env && set +a && $(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

fuzz: proto ## every RPC with 2,000 generated and mutated hostile requests (FUZZ_EXAMPLES=...), real services
	$(PY) tools/devstack.py ensure >/dev/null
	set -a && source .run/devstack.env && set +a && HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q -p no:cacheprovider tests/fuzz $(PYTEST_ARGS)

test-unit: proto ## unit tests only (no sockets)
	$(VENV)/bin/pytest -q tests/unit

up: proto ## start PostgreSQL/Redis if needed, the five services, and run one demo withdrawal
	$(PY) tools/devstack.py ensure
	set -a && source .run/devstack.env && set +a && $(PY) tools/meshctl.py up && $(PY) tools/demo.py

down: ## stop the services and any private PostgreSQL/Redis that `make up` started
	-$(PY) tools/meshctl.py down
	-$(PY) tools/devstack.py stop

status: ## what runs
	-$(PY) tools/devstack.py status
	-$(PY) tools/meshctl.py status

demo: proto ## one withdrawal through the running mesh
	set -a && source .run/devstack.env && set +a && $(PY) tools/demo.py

preflight: proto ## go/no-go checks of the running mesh before the night; exit 0 only on GO (PREFLIGHT_ARGS="--waive autovacuum")
	set -a && source .run/devstack.env && set +a && $(PY) -m tools.preflight $(PREFLIGHT_ARGS)

load: proto ## full-link load test on the running mesh, report in .run/reports/ (LOAD_ARGS="--rate 20 --duration 30")
	set -a && source .run/devstack.env && set +a && $(PY) tools/load.py $(LOAD_ARGS)

drill: proto ## campaign night rehearsed on the running mesh: gate, load, kills, Redis wipe, faults, verdict (DRILL_ARGS=...)
	set -a && source .run/devstack.env && set +a && $(PY) tools/drill.py $(DRILL_ARGS)

migrate: proto ## run every service's migrations (they also run at start)
	$(PY) tools/devstack.py ensure >/dev/null
	set -a && source .run/devstack.env && set +a && $(PY) tools/migrate.py

envdoc: ## regenerate ENVIRONMENT.md, the list of every environment variable, from the code
	$(PY) -m tools.envdoc

ci: lint typecheck proto-check test ## what CI runs

clean: ## remove generated code and run data
	rm -rf $(GEN) .run
