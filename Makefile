# The two commands README promises: `make run` (default pipeline) and `make test` (test suite).
# Both create .venv from requirements.txt on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OPS := $(VENV)/.ops-built
# DeepSpeed's JIT-compiled ops live here for make, .ci/run and the tests alike (tests/conftest.py)
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup test test-fast test-rehearsal run lint clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# DeepSpeed's CPU comm op, compiled once here rather than by the first training stages (about 35 s)
$(OPS): $(STAMP)
	$(PY) scripts/prebuild_ops.py
	touch $(OPS)

setup: $(STAMP) $(OPS)
	bash scripts/link-profile.sh

# The rehearsal (marker `rehearsal`) is its own tier: .ci/run runs it after `make test`.
# Two xdist workers, one test module each at a time, longest modules first (tests/conftest.py): most tests use one
# core, and a module's fixtures are built once.
XDIST := -n 2 --dist loadfile --no-loadscope-reorder
test: setup
	$(VENV)/bin/pytest -q -m "not rehearsal" $(XDIST)

test-rehearsal: setup
	$(VENV)/bin/pytest -q -s -m rehearsal

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow and not pipeline and not slurm" $(XDIST)

lint: setup
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV)

run: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH DVC_NO_ANALYTICS=1 $(VENV)/bin/snakemake --cores 2 all
