SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
PROTOS := $(sort $(shell find protos -name '*.proto'))
GEN    := gen
# The venv has the project installed editable (see $(STAMP)), so nothing needs PYTHONPATH to
# import; it stays for a venv shared by several checkouts (git worktrees, VENV=...): the editable
# install points at one of them, and this puts the checkout make runs in first, for its tools and
# tests and the services meshctl starts.
export PYTHONPATH := $(CURDIR):$(CURDIR)/$(GEN)

.PHONY: help venv lock proto proto-check proto-breaking lint typecheck test test-unit test-integration test-e2e test-cluster test-pgbouncer fuzz \
        up down status demo preflight migrate load drill bench ci clean envdoc certs

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# Hashed locks of every transitive dependency (`make lock` writes them from requirements/*.in).
# All three go in: CI runs the load report's tests too. pip refuses anything unhashed or unlisted.
LOCKS := requirements/runtime.txt requirements/dev.txt requirements/load.txt

# Then the project itself, editable and without its dependencies (the locks brought them): the
# services, tools and gen/'s `mesh` import from this checkout without PYTHONPATH. Its build
# backend, setuptools, is in the dev lock, so the build is not isolated: nothing unhashed is fetched.
# pyproject.toml lists the packages: a change there reinstalls the project.
PROJECT := pyproject.toml
$(STAMP): $(LOCKS) $(PROJECT)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --require-hashes $(addprefix -r ,$(LOCKS))
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	@touch $@

venv: $(STAMP) ## create .venv: the hashed locks requirements/{runtime,dev,load}.txt, then the project editable

# The lock compiler lives in a scratch venv, not in the project's: it is not a project dependency.
# This machine's pip config (constraints, local wheel dirs) and any uv settings are ignored so the
# locks resolve from the public index alone and install on a machine without them.
UV_VERSION := 0.13.9
LOCKTOOLS  ?= /tmp/wallet-mesh-locktools-$(UV_VERSION)
UV_COMPILE := env -u PIP_FIND_LINKS -u UV_INDEX_URL -u UV_EXTRA_INDEX_URL -u UV_INDEX -u UV_FIND_LINKS \
              -u UV_CONSTRAINT $(LOCKTOOLS)/bin/uv pip compile --no-config --quiet --generate-hashes \
              --universal --python-version 3.11 --custom-compile-command "make lock"

lock: ## re-resolve requirements/*.in into the hashed locks (runtime, then dev and load against it)
	test -x $(LOCKTOOLS)/bin/uv || { python3 -m venv $(LOCKTOOLS) && \
	  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(LOCKTOOLS)/bin/pip install -q uv==$(UV_VERSION); }
	cd requirements && for f in runtime dev load; do $(UV_COMPILE) $$f.in -o $$f.txt; done

# gen/ is committed, so a proto edited without regenerating is visible: proto-check regenerates
# from scratch (the same recipe as `make proto`, deterministic: sorted inputs, one protoc) and
# fails when the result differs from what git has, or adds files git does not know.
define generate
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	$(PY) tools/init_packages.py $(GEN)
	@touch $(GEN)/.stamp
endef

$(GEN)/.stamp: $(STAMP) $(PROTOS)
	$(generate)

proto: $(GEN)/.stamp ## generate Python code from protos/ into gen/ (committed: commit what this changes)

proto-check: $(STAMP) ## fail if protos do not lint or the committed gen/ is not what protos/ generate
	cd protos && $(abspath $(VENV))/bin/buf lint
	$(generate)
	@git diff --exit-code --stat -- $(GEN) || \
	  { echo "proto-check: gen/ differs from git: run make proto and commit gen/" >&2; exit 1; }
	@untracked=$$(git status --porcelain --untracked-files=all -- $(GEN) | grep '^??' || true); \
	  if [[ -n $$untracked ]]; then printf '%s\n' "$$untracked" >&2; \
	  echo "proto-check: files in gen/ that git does not have: commit gen/" >&2; exit 1; fi
	@echo "proto-check: gen/ is what protos/ generate"

BREAKING_AGAINST ?= HEAD~1
proto-breaking: $(STAMP) ## buf breaking: protos/ against the commit BREAKING_AGAINST (default HEAD~1)
	@git rev-parse -q --verify '$(BREAKING_AGAINST)^{commit}' >/dev/null || \
	  { echo "proto-breaking: NOT CHECKED: no commit $(BREAKING_AGAINST) in this clone (shallow?)" >&2; exit 2; }
	$(abspath $(VENV))/bin/buf breaking protos --against '.git#ref=$(BREAKING_AGAINST),subdir=protos'
	@echo "proto-breaking: no breaking change against $(BREAKING_AGAINST)"

lint: proto ## buf lint, ruff
	cd protos && $(abspath $(VENV))/bin/buf lint
	$(VENV)/bin/ruff check .

typecheck: proto ## mypy
	$(VENV)/bin/mypy

# PostgreSQL and Redis answering (or private ones started) and their URLs in the environment, then
# pytest over the folders given ($(1); none: the whole suite).
define pytest_with_servers
	$(PY) tools/devstack.py ensure >/dev/null
	set -a && source .run/devstack.env && set +a && $(VENV)/bin/pytest -q -p no:cacheprovider $(1) $(PYTEST_ARGS)
endef

test: proto ## the whole suite: unit, integration (real PostgreSQL and Redis), e2e
	$(call pytest_with_servers,)

test-integration: proto ## integration tests only (real PostgreSQL and Redis, services in-process)
	$(call pytest_with_servers,tests/integration)

test-e2e: proto ## end-to-end tests only (the whole mesh as processes)
	$(call pytest_with_servers,tests/e2e)

# Through a private PgBouncer in transaction mode (tools/pgbouncer.py; installed by apt-get as root if
# missing) in front of the PostgreSQL devstack finds: the e2e tests (the drill's included), the payout
# tests, the schema-role tests and tests/pooler. Stopped on the way out, also when a test fails.
PGBOUNCER_RUN ?= .run/pgbouncer
PGBOUNCER_TESTS := tests/pooler tests/integration/test_schema_roles.py tests/integration/test_leader.py tests/integration/test_payout_*.py \
                   tests/integration/test_withdraw_payout_*.py tests/e2e
test-pgbouncer: proto ## the e2e, payout and drill tests through PgBouncer (transaction pooling)
	$(PY) tools/devstack.py ensure >/dev/null
	set -a && source .run/devstack.env && set +a && \
	  trap '$(PY) tools/pgbouncer.py stop $(PGBOUNCER_RUN)' EXIT && \
	  $(PY) tools/pgbouncer.py start $(PGBOUNCER_RUN) && \
	  set -a && source $(PGBOUNCER_RUN)/pgbouncer.env && set +a && \
	  $(VENV)/bin/pytest -q -p no:cacheprovider $(PGBOUNCER_TESTS) $(PYTEST_ARGS)

# The tests that drive Redis hardest, on a real local Redis Cluster (3 masters, 1 replica each,
# Debian's redis-server; tools/redis_cluster.py starts it on free ports under .run/ and stops it
# however the tests end), with tests/cluster/ (a primary killed mid-drain), which only this
# target collects, and PostgreSQL behind a private PgBouncer in transaction mode (tools/pgbouncer.py)
# for every service: the issue's scale-out stack, both engines at once. Each stage wraps the next.
CLUSTER_TESTS ?= tests/cluster tests/pooler tests/integration/test_leader.py tests/e2e tests/integration/test_payout_pipeline.py \
  tests/integration/test_payout_redis.py tests/integration/test_payout_redis_batch.py \
  tests/integration/test_payout_rates.py tests/integration/test_payout_processes.py \
  tests/integration/test_withdraw_wipes.py tests/integration/test_withdraw_relay.py \
  tests/integration/test_withdraw_methods_cache.py
test-cluster: proto ## e2e, payout, wipe and drill tests on a local Redis Cluster (a primary killed mid-drain) and through PgBouncer
	$(PY) tools/devstack.py ensure >/dev/null
	set -a && source .run/devstack.env && set +a && \
	  trap '$(PY) tools/pgbouncer.py stop $(PGBOUNCER_RUN)' EXIT && \
	  $(PY) tools/pgbouncer.py start $(PGBOUNCER_RUN) && \
	  set -a && source $(PGBOUNCER_RUN)/pgbouncer.env && set +a && \
	  $(PY) -m tools.redis_cluster run --dir .run/redis-cluster -- \
	  $(VENV)/bin/pytest -q -p no:cacheprovider $(CLUSTER_TESTS) $(PYTEST_ARGS)

fuzz: proto ## every RPC with 2,000 generated and mutated hostile requests (FUZZ_EXAMPLES=...), real services
	$(PY) tools/devstack.py ensure >/dev/null
	set -a && source .run/devstack.env && set +a && HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q -p no:cacheprovider tests/fuzz $(PYTEST_ARGS)

test-unit: proto ## unit tests only (no sockets)
	$(VENV)/bin/pytest -q tests/unit

# The local mesh and the tools that drive it run as a dev environment unless told otherwise:
# without SESSION_TOKEN_KEYS they share the well-known dev session key (a WARNING says so).
up demo preflight load drill: export MESH_ENV ?= dev

certs: ## a local CA and a certificate per service, operator and the app edge, in .run/certs (what is missing)
	$(PY) tools/certs.py

# `make up REPLICAS=2`: two of each service (tools/meshctl.py: replica k on port + 2000*k).
REPLICAS ?= 1

up: proto ## start PostgreSQL/Redis if needed, `make certs` if missing, the five services (REPLICAS of each), one demo withdrawal
	$(PY) tools/devstack.py ensure
	$(PY) tools/certs.py
	set -a && source .run/devstack.env && set +a && $(PY) tools/meshctl.py up --replicas $(REPLICAS) && $(PY) tools/demo.py

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

# Benchmarks take from seconds to many minutes and several seed a million rows or need `make up`'s
# mesh (each one's docstring and BENCHMARKS.md say), so none runs unasked: the list, or the one named.
bench: proto ## list the benchmarks in bench/; BENCH=name runs one (BENCH_ARGS="--orders 3000")
	@if [[ -z "$(BENCH)" ]]; then $(PY) -m bench; else \
	  $(PY) tools/devstack.py ensure >/dev/null && set -a && source .run/devstack.env && set +a && \
	  $(PY) -m bench $(BENCH) $(BENCH_ARGS); fi

envdoc: ## regenerate ENVIRONMENT.md, the list of every environment variable, from the code
	$(PY) -m tools.envdoc

ci: lint typecheck proto-check proto-breaking test ## what CI runs

clean: ## remove run data (gen/ is committed and stays; `make proto` rewrites it)
	rm -rf .run $(GEN)/.stamp
	find $(GEN) -name __pycache__ -prune -exec rm -rf {} +
