# Set-up and the two entry points of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg

# Docker tests use this base image (no registry is needed: `make docker-engine` builds it).
export MLOPS_BASE_IMAGE ?= mlops-base:bookworm

.PHONY: setup peers quickstart test lint bench docker-engine

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# an editable install skips data files: enable the server extension as installing the wheel does
	install -D -m 644 jupyter-config/jupyter_server_config.d/mlops_magics.json \
		$(VENV)/etc/jupyter/jupyter_server_config.d/mlops_magics.json
	touch $@

setup: $(VENV)/.installed

# Azure ML's own server, in its own environment: the differential tests compare mlops-serve with it.
peers: setup
	$(BIN)/python benchmarks/peers.py azmlinfsrv

# A Docker engine and the base image, on a machine without an image registry (root; idempotent).
docker-engine:
	scripts/docker-engine.sh $(MLOPS_BASE_IMAGE)

quickstart: setup
	$(BIN)/python examples/quickstart.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
test: lint peers
	$(BIN)/python -m pytest $(NBVAL) tests notebooks; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: setup
	$(BIN)/python benchmarks/registry.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/docker.py
	$(BIN)/python benchmarks/onnx.py
	$(BIN)/python benchmarks/profiling.py
	$(BIN)/python benchmarks/collection.py
