# Two commands on a fresh machine: `make run` (the pipeline, ending in a leaderboard) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SKYBENCH_ROOT := $(CURDIR)
# Quiet TensorFlow and keep the CPU thread count sane on small machines.
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup data run test check lint clean notebooks

# Create or refresh .venv whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	touch $@

setup: $(VENV)/.installed
	@bash scripts/ensure-sandbox-tools.sh
	@bash scripts/ensure-postgres.sh

# Real data from the DVC remote `challenge`; go on without it when the remote is unreachable.
data: setup
	@bash scripts/pull-real-data.sh

run: setup data
	bash scripts/repro.sh
	skybench report

# The full suite (what CI runs): every test, slow ones included.
test: setup data
	$(PY) -m pytest -q

# The fast lane (under 3 minutes on 2 cores): everything not marked `slow` (notebooks, baseline training,
# sandboxed TF/torch models, Ray, the MLflow server, big simulations).
check: setup data
	$(PY) -m pytest -q -m "not slow"

# The tutorial notebooks, executed with bigger sizes into notebooks/executed/ (git-ignored), outputs kept.
notebooks: setup data
	SKYBENCH_NB_SIZE=1000 SKYBENCH_NB_EPOCHS=8 $(PY) notebooks/execute.py

# Lint and type checks (CI runs them before the tests; .pre-commit-config.yaml runs the same on commit).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf releases results scratch mlflow.db mlruns
