# Every target sets up what it needs: a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip reads this machine's local wheel mirror through its own config; nothing here downloads model weights.
PIP_FLAGS := --disable-pip-version-check -q

.PHONY: setup demo test bench lint toy-model clean-venv

setup: $(STAMP)

# The environment is (re)built whenever it is missing or the dependency files change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip setuptools wheel
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[dev,scale,tracking]'
	$(PY) -m harness.analysis.wordnet_data  # WordNet 3.0 for NLTK, offline, into $(VENV)/nltk_data (docs/daam_analyses.md)
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/harness demo

test: $(STAMP)
	$(PY) -m pytest -q --timeout=900

bench: $(STAMP)
	$(PY) -m harness.bench --out results/bench.json

lint: $(STAMP)
	$(VENV)/bin/ruff check harness tests

toy-model: $(STAMP)
	$(VENV)/bin/harness toy train

clean-venv:
	rm -rf $(VENV)
