# Set-up and the two entry points of the README: `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg

# Docker tests use this base image (no registry is needed: `make docker-engine` builds it).
export MLOPS_BASE_IMAGE ?= mlops-base:bookworm

.PHONY: setup labextension peers quickstart lab test test-without-docker lint bench docker-engine \
	kube-cluster kube-down kube-check image-registry image-registry-down

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip builds the project as any install route does (pyproject.toml: hatchling, whose build hook runs npm to build the
# JupyterLab sidebar): the editable install puts the sidebar and the server extension's config in the venv itself.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing mlops-magics (editable) and its test tools into $(VENV); building the sidebar runs npm"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# Rebuilding the sidebar after an edit of labextension/ (set-up built it): TypeScript compiled by tsc and bundled by
# the JupyterLab extension builder (Node.js 20 and npm) into mlops_magics/labextension, then copied into the venv as
# installing the package does.
LABEXT := mlops_magics/labextension
LABEXT_SOURCES := labextension/package.json labextension/tsconfig.json $(wildcard labextension/src/*.ts labextension/style/*)

# `npm ci` refuses this lock (it lacks entries for rspack's optional binaries of other platforms); `npm install`
# takes the locked versions and leaves the lock as it is (a few seconds when node_modules is up to date).
$(LABEXT)/package.json: $(LABEXT_SOURCES) labextension/package-lock.json | $(VENV)/.installed
	cd labextension && npm install --no-audit --no-fund --loglevel=error
	rm -rf $(LABEXT) labextension/lib labextension/tsconfig.tsbuildinfo
	cd labextension && PATH="$(CURDIR)/$(BIN):$$PATH" npm run build --silent
	rm -rf $(VENV)/share/jupyter/labextensions/mlops-magics
	mkdir -p $(VENV)/share/jupyter/labextensions
	cp -r $(LABEXT) $(VENV)/share/jupyter/labextensions/mlops-magics
	cp labextension/install.json $(VENV)/share/jupyter/labextensions/mlops-magics/

labextension: $(LABEXT)/package.json

setup: $(VENV)/.installed labextension

# Azure ML's own server, in its own environment: the differential tests compare mlops-serve with it.
peers: setup
	$(BIN)/python benchmarks/peers.py azmlinfsrv

# A Docker engine and the base image, on a machine without an image registry (root; idempotent).
docker-engine:
	scripts/docker-engine.sh $(MLOPS_BASE_IMAGE)

# A real single-node Kubernetes (v1.20.2, built from Debian's source package; its kubelet runs pods on the Docker
# engine) on 127.0.0.1 for the Kubernetes tests (root; idempotent). The first build takes ~25 minutes on 2 cores and
# is cached in $(KUBE_CACHE); after that this takes seconds, plus ~25 s to start the cluster. scripts/kube/README.md.
KUBE_CACHE ?= /var/cache/mlops-kube/v1.20.2
KUBE_STATE ?= /tmp/mlops-kube
export MLOPS_KUBE_CACHE := $(KUBE_CACHE)

kube-cluster: docker-engine
	scripts/kube/build.sh $(KUBE_CACHE)
	scripts/kube/up.sh $(KUBE_STATE)

kube-down:
	scripts/kube/down.sh $(KUBE_STATE)

# The recipe's own end-to-end check of a running cluster (~1 minute): Deployments, probes, port-forward, HPA, rollout.
kube-check: setup
	KUBECONFIG=$(KUBE_STATE)/kubeconfig $(BIN)/python scripts/kube/check.py

# An image registry for the push tests: Debian's docker-registry on 127.0.0.1:$(REGISTRY_PORT), plain HTTP (the
# engine allows that on loopback), data in /tmp/mlops-registry (root to install it; idempotent).
REGISTRY_PORT ?= 15000

image-registry:
	MLOPS_REGISTRY_PORT=$(REGISTRY_PORT) scripts/image-registry.sh start

image-registry-down:
	scripts/image-registry.sh stop

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

# What a machine without a Docker engine does differently (CI runs it before it installs one): the Docker tests
# skip, saying why, and the notebooks fall back to local processes (a run with Docker alone once hid a failure).
NO_DOCKER := DOCKER_HOST=unix:///nonexistent MLOPS_REQUIRE_DOCKER= MLOPS_REQUIRE_KUBERNETES= MLOPS_REQUIRE_REGISTRY=

test-without-docker: setup
	$(NO_DOCKER) $(BIN)/python -m pytest -m docker tests
	$(NO_DOCKER) $(BIN)/python -m pytest $(NBVAL) notebooks

bench: setup
	$(BIN)/python benchmarks/registry.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/docker.py
	KUBECONFIG=$(KUBE_STATE)/kubeconfig $(BIN)/python benchmarks/kubernetes.py
	$(BIN)/python benchmarks/onnx.py
	$(BIN)/python benchmarks/profiling.py
	$(BIN)/python benchmarks/collection.py
	$(BIN)/python benchmarks/sidebar.py
	$(BIN)/python benchmarks/hostile.py
	$(BIN)/python benchmarks/endpoints.py
	$(BIN)/python benchmarks/edge.py
