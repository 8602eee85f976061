# `make figures`: set up .venv from the pinned lock, then regenerate every figure (quick profile).
# `make test`: set up .venv, then run the test suite. Both are the README's Quick start.
# PYTHON picks the interpreter (any 3.11+), VENV the environment's folder, ARGS Snakemake options.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: figures test oracle browser slurm site lint lab clean-results

figures: $(VENV)/.installed
	$(PY) -m ntkpaper figures $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

oracle: $(VENV)/.installed
	$(PY) -m pytest -q -m oracle

# The report site of the figures built so far (make figures builds it too): ARGS="--profile paper".
site: $(VENV)/.installed
	$(PY) -m ntkpaper site $(ARGS)

# Headless Chromium on the built site of a tiny workflow (installs Debian's chromium as root).
browser: $(VENV)/.installed
	$(PY) -m pytest -q -m browser tests/test_site.py

# The SLURM profile on a one-node cluster started on this machine (root: installs Debian's
# slurm-wlm and munge).
slurm: $(VENV)/.installed
	timeout -k 60 900 $(PY) -m pytest -q -m slurm tests/test_slurm.py -p no:cacheprovider

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check ntkpaper tests benchmarks
	$(VENV)/bin/ruff format --check ntkpaper tests benchmarks

$(VENV)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: ntkpaper needs Python 3.11 or later; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." \
	       "Run make with PYTHON=/path/to/python3.11 (or newer)." >&2; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "error: '$(PYTHON)' lacks venv/ensurepip; on Debian or Ubuntu: apt install python3-venv" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

clean-results:
	rm -rf results
