# Every target works on a fresh machine with nothing but Python 3.10+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test bench package clean

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

# The AWS Lambda package (deploy/hub.yaml's CodeKey): the runtime dependencies of
# pyproject.toml as Linux wheels for the Python 3.11 runtime, the code, and config.yaml.
package: install
	rm -rf build/lambda build/wheels build/layerguard.zip && mkdir -p build/lambda
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir build/wheels .
	$(BIN)/pip install --quiet --target build/lambda --platform manylinux2014_x86_64 --implementation cp \
		--python-version 3.11 --only-binary=:all: --find-links build/wheels layerguard
	rm -rf build/lambda/integrations/sandbox build/lambda/bin
	cp config.yaml build/lambda/
	cd build/lambda && ../../$(BIN)/python -m zipfile -c ../layerguard.zip $$(ls -A)
	@echo "build/layerguard.zip: upload it to the CodeBucket of deploy/hub.yaml"

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
