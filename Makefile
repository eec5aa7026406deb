# perucast — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov (the manifests' policy scanner) pins packages the project's lock cannot share
# (tabulate, packaging, dpath), so it gets its own virtualenv.
CHECKOV_VENV := .venv-tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# promtool (Prometheus' rule checker, for the alerting rules in manifests/components/monitoring)
# comes from Debian's prometheus package: only that binary is unpacked, the server is neither
# installed nor started.
PROMTOOL := .venv-tools/prometheus/bin/promtool
# The Prometheus Pushgateway (Debian's prometheus-pushgateway), for the monitor step's tests:
# only the binary is unpacked; the tests start it on a loopback port and stop it.
PUSHGATEWAY := .venv-tools/prometheus/bin/pushgateway
# The venv's bin first, so dvc.yaml stages and subprocesses use the pinned tools.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2
PYTEST_ARGS ?=
DEMO_DIR ?= demo_output

.PHONY: help install java demo test lint format bench bench-tools protos clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "perucast make targets:\n"} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: java $(STAMP) $(CHECKOV_STAMP) $(PROMTOOL) $(PUSHGATEWAY) ## Create .venv with the pinned dependencies (re-installs only when pyproject.toml or requirements.lock change), checkov's own .venv-tools/checkov, promtool and the Pushgateway

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON_BIN) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"perucast needs Python 3.11, found {sys.version}"'
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)
	@echo "installed perucast into $(VENV)"

$(CHECKOV_STAMP): manifests/tools/checkov-requirements.txt
	@$(PYTHON_BIN) -m venv --clear $(CHECKOV_VENV)
	@printf '*\n' > .venv-tools/.gitignore
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --no-deps -r manifests/tools/checkov-requirements.txt
	@sha256sum manifests/tools/checkov-requirements.txt | cut -d' ' -f1 > $(CHECKOV_STAMP)
	@echo "installed checkov into $(CHECKOV_VENV)"

$(PROMTOOL):
	@echo "unpacking promtool from Debian's prometheus package into $(dir $(PROMTOOL))"
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && chmod 755 "$$tmp" && \
	if ! (cd "$$tmp" && apt-get download -qq prometheus 2>/dev/null); then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && (cd "$$tmp" && apt-get download -qq prometheus); \
	fi && \
	dpkg-deb --fsys-tarfile "$$tmp"/prometheus_*.deb | tar -x -C "$$tmp" ./usr/bin/promtool && \
	mkdir -p $(dir $(PROMTOOL)) && printf '*\n' > .venv-tools/.gitignore && \
	install -m 0755 "$$tmp/usr/bin/promtool" $(PROMTOOL)
	@$(PROMTOOL) --version | head -n 1

$(PUSHGATEWAY):
	@echo "unpacking the Pushgateway from Debian's prometheus-pushgateway package into $(dir $(PUSHGATEWAY))"
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && chmod 755 "$$tmp" && \
	if ! (cd "$$tmp" && apt-get download -qq prometheus-pushgateway 2>/dev/null); then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && (cd "$$tmp" && apt-get download -qq prometheus-pushgateway); \
	fi && \
	dpkg-deb --fsys-tarfile "$$tmp"/prometheus-pushgateway_*.deb | tar -x -C "$$tmp" ./usr/bin/prometheus-pushgateway && \
	mkdir -p $(dir $(PUSHGATEWAY)) && printf '*\n' > .venv-tools/.gitignore && \
	install -m 0755 "$$tmp/usr/bin/prometheus-pushgateway" $(PUSHGATEWAY)
	@$(PUSHGATEWAY) --version 2>&1 | head -n 1

java: ## Install OpenJDK 17 with apt when java is missing (Spark needs it)
	@if ! command -v java >/dev/null 2>&1; then \
	  echo "java not found: installing openjdk-17-jre-headless with apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless; \
	fi

bench-tools: ## Install the serving load generators with apt when missing: h2load (nghttp2-client, gRPC) and wrk (REST)
	@missing=""; \
	command -v h2load >/dev/null 2>&1 || missing="$$missing nghttp2-client"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

demo: install ## Run the end-to-end demo on the embedded default (small data) and show the results
	$(PY) -m perucast.demo --out $(DEMO_DIR)

test: install ## Run the whole test suite (slow multi-process tests included)
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: install ## Lint with ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: protos
protos: install ## Regenerate serving/protos/*_pb2.py(i) from the .proto files (grpcio-tools)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. serving/protos/*.proto

bench: install bench-tools ## Run the benchmarks: writes bench/results.json and bench/RESULTS.md
	$(PY) -m bench.run

IMAGE_REPO ?= ghcr.io/perucast/perucast
IMAGE_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml | head -n 1)
IMAGE_REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo +dirty)

.PHONY: image
image: ## Build the container image ghcr.io/perucast/perucast:<version> (needs a Docker engine)
	@command -v docker >/dev/null 2>&1 || { echo "no Docker engine: the docker CLI is not installed (the Dockerfile is still checked by tests/test_image.py)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "no Docker engine: 'docker info' reaches no daemon (start dockerd or set DOCKER_HOST; the Dockerfile is still checked by tests/test_image.py)" >&2; exit 1; }
	DOCKER_BUILDKIT=1 docker build --build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) -t $(IMAGE_REPO):$(IMAGE_VERSION) .

clean: ## Remove generated data, demo output and caches (keeps .venv)
	rm -rf $(DEMO_DIR) data/raw data/validated data/features reports .pytest_cache .ruff_cache
