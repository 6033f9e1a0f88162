# Two commands: `make run` (a real batch end to end, embedded) and `make test` (the whole suite).
# Both set everything up on a fresh machine and reuse the venv afterwards.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run run-gcs test test-unit lint typecheck bench clean

$(STAMP): constraints.txt setup.cfg pyproject.toml docker/pip-install.sh
	# Headless Chromium for the browser tests, from Debian (never `playwright install`).
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	# redis-server for the message-queue (AssetWatcher) tests, from Debian; they start their own on a free port.
	test -x /usr/bin/redis-server || (apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The same install command the images run (docker/pip-install.sh), with every extra.
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" docker/pip-install.sh worker,beam,airflow,dev --editable
	$(PY) -m pip check
	# torchao (the int8 backend's GPU path) in a folder of its own, off the import path: transformers
	# imports it on every model load when it can, and the worker image has none (bench/isolated_torchao.py).
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/torchao -c constraints.txt torchao
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/genbatch run examples/catalog/spec.yaml

# The same run, publishing to gs:// on a local fake-gcs-server (no cloud needed). KEEP=1 leaves the
# emulator running to look at the outputs (it prints the STORAGE_EMULATOR_HOST to export and how to
# stop it: `$(PY) -m devstack.gcs_run --stop`); with STORAGE_EMULATOR_HOST set, that emulator is used.
run-gcs: setup
	$(PY) -m devstack.gcs_run examples/catalog/spec.yaml $(if $(filter 1,$(KEEP)),--keep)

test: setup
	$(PY) -m pytest -q --durations=25  # the slowest tests, for keeping .ci/run within its budget

test-unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy genbatch models operators beam_jobs dags devstack

bench: setup
	$(PY) -m bench.run_all  # each benchmark pins itself to one core

clean:
	rm -rf .genbatch runs

# A real local Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor; PostgreSQL from
# Debian's package, installed on first use) with this repo's DAGs; prints the UI address and the logins.
# `make airflow-down` stops everything it started. See docs/operations.md.
.PHONY: airflow airflow-down
airflow: setup
	$(PY) -m devstack.airflow_stack up

airflow-down:
	$(PY) -m devstack.airflow_stack down
