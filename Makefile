# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps what it needs.
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
DATA_DIR  ?= $(abspath ../shared/data)
export RECOMMENDER_DATA__DATA_DIR ?= $(DATA_DIR)
CHROMIUM  := /usr/bin/chromium
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help bootstrap stack-up stack-down demo test lint bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

bootstrap: $(STAMP) $(CHROMIUM)  ## venv, pip install, Maven fetch of the jars, Chromium for the dashboard tests
	$(BIN)/recommender stack fetch

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

stack-up: bootstrap  ## start Kafka, Cassandra and Elasticsearch
	$(BIN)/recommender stack up

stack-down: $(STAMP)  ## stop them
	$(BIN)/recommender stack down

demo: bootstrap  ## run the whole pipeline on ml-latest-small
	$(BIN)/recommender demo $(DEMO_ARGS)

test: bootstrap  ## the suite on the real stack, then secure mode, then the cluster smoke test (nodes 3)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest tests $(PYTEST_ARGS)
	$(BIN)/pytest tests/secure $(PYTEST_ARGS)
	$(BIN)/pytest tests/cluster $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, and the import contracts in pyproject.toml (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: bootstrap  ## benchmarks -> bench/results/*.json and BENCHMARKS.md
	$(BIN)/python -m bench.run_all

.PHONY: faults soak scale tune cluster
faults: bootstrap  ## every fault under load + 10,000 fuzzed messages per topic -> bench/results/faults.json, fuzz.json
	$(BIN)/pytest -m long tests/faults tests/fuzz $(PYTEST_ARGS)

cluster: bootstrap  ## node loss under load on the local cluster (stack up --nodes 3) -> cluster.json; cluster vs single-node benchmarks (CLUSTER_ARGS=--quick: short) -> cluster_compare.json
	$(BIN)/pytest -m long tests/cluster $(PYTEST_ARGS)
	$(BIN)/python -m bench.cluster_compare $(CLUSTER_ARGS)

soak: bootstrap  ## 30 min at 1,000 requests/s + replay (SOAK_MINUTES=3: short) -> bench/results/soak.json
	$(BIN)/python -m bench.soak

scale: bootstrap  ## 1M synthetic users (~20.8M ratings) through ingest and training -> bench/results/scale.json
	$(BIN)/python -m bench.run_all --only scale

tune: bootstrap  ## how the models' defaults were chosen: validation splits of ml-latest-small + synthetic -> bench/results/tune.json
	$(BIN)/python -m bench.run_all --only tune

clean:
	rm -rf $(VENV) build *.egg-info
