# Copyright: pft contributors
# SPDX-License-Identifier: GPL-3.0-or-later
# pft: the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTEST_ARGS ?=
DEMO_ARGS ?=
BMCS ?= 128

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)

.PHONY: help setup lint test unit integration e2e e2e-site bench demo clean testbed-up testbed-down

help:
	@echo "make setup   install pinned Debian packages and the .venv (idempotent)"
	@echo "make test    setup, lint, then the whole test suite (unit, integration, end-to-end)"
	@echo "make lint    yamllint (strict), ansible-lint (production profile), ansible-doc, ruff, licence headers"
	@echo "make bench   run the benchmarks in bench/ (BMCS=$(BMCS))"
	@echo "make demo    the proactive loop on the built-in virtual cluster"

setup:
	@bash scripts/setup.sh

lint: setup
	@echo "==> yamllint (strict)"
	@$(BIN)/yamllint --strict .
	@echo "==> ansible-lint (production profile)"
	@$(BIN)/ansible-lint --offline --profile production
	@echo "==> ansible-doc renders every module"
	@for m in plugins/modules/*.py; do n=$$(basename $$m .py); \
	  $(BIN)/ansible-doc -t module $$n >/dev/null || { echo "ansible-doc failed for $$n"; exit 1; }; done
	@echo "==> ansible-doc -l lists every module"
	@listed=$$($(BIN)/ansible-doc -t module -l 2>/dev/null | awk '{print $$1}'); \
	  for m in plugins/modules/*.py; do n=$$(basename $$m .py); \
	  grep -qx "ansible.legacy.$$n" <<< "$$listed" || { echo "ansible-doc -l does not list $$n"; exit 1; }; done
	@echo "==> ruff"
	@$(BIN)/ruff check .
	@echo "==> licence headers"
	@$(BIN)/python scripts/spdx_headers.py --check

# The whole suite, the provisioned-cluster tests included (PFT_E2E_SITE=1: site.yml from bare
# nodes, a second run, the testinfra verify, the Xen and watch tests; docs/site.md). For a quick
# loop without them: make test PFT_E2E_SITE=
#
# It ends with a table of where the time went (setup, lint, unit, integration, the testbed and
# site.yml phases, each e2e module; scripts/phase_table.py), after pytest's slowest tests, and
# prints it whether the tests passed or not. The phases are recorded in $(PHASES) (PFT_PHASES:
# tests/phase_clock.py). setup and lint are timed here (lint runs with -o setup: setup just ran).
PFT_E2E_SITE ?= 1
# A converge from bare nodes runs only when no kept cluster matches its inputs (docs/site.md);
# make test PFT_E2E_COLD=1 converges anyway.
PFT_E2E_COLD ?=
export PFT_E2E_COLD
# A cold run keeps its converged cluster for later runs (docs/site.md); PFT_E2E_KEEP_CLUSTER=0 does not.
PFT_E2E_KEEP_CLUSTER ?= 1
export PFT_E2E_KEEP_CLUSTER
PHASES ?= $(CURDIR)/.test-phases.jsonl
# The tests that need no testbed run beside the end-to-end session (PFT_TEST_SIDE=1, the default):
# while the testbed image builds, the nodes boot and test_testbed.py reboots one of them, most of the
# two cores are idle (docs/site.md, "In make test"). PFT_TEST_SIDE=0: one pytest session, as before.
PFT_TEST_SIDE ?= 1
SIDE_LOG = $(CURDIR)/.test-side.log
PHASE_TABLE = python3 $(CURDIR)/scripts/phase_table.py "$(PHASES)"
PHASE_TABLE_END = $(PHASE_TABLE) --record "make test end" --seconds 0; $(PHASE_TABLE)
test:
	@: > "$(PHASES)"; $(PHASE_TABLE) --record "make test start" --seconds 0
	@t=$$(date +%s.%N); $(MAKE) --no-print-directory setup; rc=$$?; \
	  $(PHASE_TABLE) --record setup --since $$t; [ $$rc = 0 ] || { $(PHASE_TABLE_END); exit $$rc; }
	@t=$$(date +%s.%N); $(MAKE) --no-print-directory -o setup lint; rc=$$?; \
	  $(PHASE_TABLE) --record lint --since $$t; [ $$rc = 0 ] || { $(PHASE_TABLE_END); exit $$rc; }
	@echo "==> pytest"
	@if [ "$(PFT_TEST_SIDE)" = 1 ]; then \
	  echo "    the tests that need no testbed run beside the end-to-end session; their output is in"; \
	  echo "    $(SIDE_LOG) and printed when both are done"; \
	  PFT_PHASES="$(PHASES)" $(BIN)/python -m pytest -m "not e2e" -p no:cacheprovider \
	    --basetemp="$(CURDIR)/.pytest-side" --durations=15 $(PYTEST_ARGS) > "$(SIDE_LOG)" 2>&1 & side=$$!; \
	  PFT_E2E_SITE=$(PFT_E2E_SITE) PFT_PHASES="$(PHASES)" $(BIN)/python -m pytest -m e2e --durations=25 \
	    $(PYTEST_ARGS); rc=$$?; wait $$side; src=$$?; \
	  echo "==> the tests that need no testbed (run beside the end-to-end session, exit $$src)"; \
	  cat "$(SIDE_LOG)"; [ $$rc = 5 ] && rc=0; [ $$src = 5 ] && src=0; [ $$rc = 0 ] && rc=$$src; \
	else \
	  PFT_E2E_SITE=$(PFT_E2E_SITE) PFT_PHASES="$(PHASES)" $(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS); \
	  rc=$$?; \
	fi; $(PHASE_TABLE_END); exit $$rc

unit: setup
	@$(BIN)/python -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

integration: setup
	@$(BIN)/python -m pytest -m "integration" $(PYTEST_ARGS)

e2e: setup
	@$(BIN)/python -m pytest -m "e2e" $(PYTEST_ARGS)

# The provisioned-cluster suite alone: site.yml from bare nodes, a second run, the testinfra
# verify, then the Xen and watch tests on that cluster (docs/site.md).
e2e-site: setup
	@PFT_E2E_SITE=1 $(BIN)/python -m pytest -m "e2e" tests/e2e $(PYTEST_ARGS)

bench: setup
	@$(BIN)/python bench/health_sweep.py --bmcs $(BMCS)
	@$(BIN)/python bench/target_rank.py

testbed-up: setup
	@$(BIN)/python testbed/testbed up

testbed-down: setup
	@$(BIN)/python testbed/testbed down

demo: setup
	@$(BIN)/python scripts/demo.py $(DEMO_ARGS)

clean:
	rm -rf .pytest_cache
