# Set-up and the two entry points of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg

# Docker tests use this base image (no registry is needed: `make docker-engine` builds it).
export MLOPS_BASE_IMAGE ?= mlops-base:bookworm

.PHONY: setup labextension peers quickstart lab test lint bench docker-engine

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# an editable install skips data files: enable the server extension as installing the wheel does
	install -D -m 644 jupyter-config/jupyter_server_config.d/mlops_magics.json \
		$(VENV)/etc/jupyter/jupyter_server_config.d/mlops_magics.json
	touch $@

# The JupyterLab sidebar: TypeScript compiled by tsc and bundled by the JupyterLab extension builder (Node.js 20
# and npm). The build lands in mlops_magics/labextension (a wheel ships it as share/jupyter/labextensions/...);
# an editable install does not, so it is copied into the venv as installing the wheel would.
LABEXT := mlops_magics/labextension
LABEXT_SOURCES := labextension/package.json labextension/tsconfig.json $(wildcard labextension/src/*.ts labextension/style/*)

# `npm ci` refuses this lock (it lacks entries for rspack's optional binaries of other platforms); `npm install`
# takes the locked versions and leaves the lock as it is.
labextension/node_modules/.installed: labextension/package.json labextension/package-lock.json
	cd labextension && npm install --no-audit --no-fund --loglevel=error
	touch $@

$(LABEXT)/package.json: $(LABEXT_SOURCES) labextension/node_modules/.installed $(VENV)/.installed
	rm -rf $(LABEXT) labextension/lib labextension/tsconfig.tsbuildinfo
	cd labextension && PATH="$(CURDIR)/$(BIN):$$PATH" npm run build --silent
	rm -rf $(VENV)/share/jupyter/labextensions/mlops-magics
	mkdir -p $(VENV)/share/jupyter/labextensions
	cp -r $(LABEXT) $(VENV)/share/jupyter/labextensions/mlops-magics

labextension: $(LABEXT)/package.json

setup: $(VENV)/.installed labextension

# Azure ML's own server, in its own environment: the differential tests compare mlops-serve with it.
peers: setup
	$(BIN)/python benchmarks/peers.py azmlinfsrv

# A Docker engine and the base image, on a machine without an image registry (root; idempotent).
docker-engine:
	scripts/docker-engine.sh $(MLOPS_BASE_IMAGE)

# The whole loop (train, register, ONNX, validate, deploy, score, drift, undeploy) in a registry of its own.
quickstart: setup
	$(BIN)/python examples/quickstart.py

# JupyterLab with the MLOps sidebar, on 127.0.0.1, the notebooks folder open (root needs --allow-root).
lab: setup
	$(BIN)/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd labextension && npm run lint --silent

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
	$(BIN)/python benchmarks/sidebar.py
	$(BIN)/python benchmarks/hostile.py
