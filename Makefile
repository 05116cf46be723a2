# Every target works on a fresh machine with nothing but Python 3.10+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/layerguard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/layerguard

demo: install
	$(BIN)/layerguard demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/containment.py
	$(BIN)/python bench/ack_latency.py
	$(BIN)/python bench/consumers.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
