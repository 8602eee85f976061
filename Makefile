# `make figures`: set up .venv from the pinned lock, then regenerate every figure (quick profile).
# `make test`: set up .venv, then run the test suite. Both are the README's Quick start.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: figures test oracle lint clean-results

figures: $(VENV)/.installed
	$(PY) -m ntkpaper figures $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

oracle: $(VENV)/.installed
	$(PY) -m pytest -q -m oracle

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check ntkpaper tests benchmarks
	$(VENV)/bin/ruff format --check ntkpaper tests benchmarks

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

clean-results:
	rm -rf results
