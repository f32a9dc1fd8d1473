PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/minis3 run

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=25 $(PYTEST_ARGS)

test-slow: $(STAMP)  # the tests marked slow: 100,000-key listings, large transfers, memory ceilings
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/compare.py

clean:
	rm -rf var spool/* nodes/node-*
