# Two commands on a fresh machine: `make run` (the pipeline, ending in a leaderboard) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SKYBENCH_ROOT := $(CURDIR)
# Quiet TensorFlow and keep the CPU thread count sane on small machines.
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup data run test check lint clean notebooks lock

# The whole environment (pyproject's [all,dev] extras and everything they pull in) is pinned, with hashes, in
# requirements/lock.txt, for CPython 3.11 on Linux x86_64. torch's CPU build is not on PyPI: pip takes it from
# TORCH_INDEX (or from a local wheel folder in the pip configuration, PIP_FIND_LINKS), in a first step of its
# own so that only that one lookup goes to the extra index.
LOCK := requirements/lock.txt
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check

# Create or refresh .venv whenever the lock or pyproject.toml changes.
$(VENV)/.installed: $(LOCK) pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	awk '/^torch==/{p=1} p&&/^ +# via/{exit} p' $(LOCK) > $(VENV)/torch-lock.txt
	$(PIP_INSTALL) --require-hashes --no-deps --extra-index-url $(TORCH_INDEX) -r $(VENV)/torch-lock.txt
	$(PIP_INSTALL) --require-hashes -r $(LOCK)
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	touch $@

# Refresh the lock after editing pyproject's dependencies: `make lock` keeps every pin it can and adds what is
# new; `make lock UPGRADE=--upgrade` moves everything to the newest allowed version (then run `make test`).
# TORCH_WHEELS is where uv finds torch's CPU wheels (a local folder works too: TORCH_WHEELS=/opt/wheels).
TORCH_WHEELS ?= https://download.pytorch.org/whl/cpu/torch/
lock:
	uv pip compile pyproject.toml --extra all --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --find-links $(TORCH_WHEELS) $(UPGRADE) \
	  --custom-compile-command "make lock" -o $(LOCK)

setup: $(VENV)/.installed
	@bash scripts/ensure-sandbox-tools.sh
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-browser.sh

# Real data from the DVC remote `challenge`; go on without it when the remote is unreachable.
data: setup
	@bash scripts/pull-real-data.sh

run: setup data
	bash scripts/repro.sh
	skybench report

# The full suite (what CI runs): every test, slow ones included, spread over TEST_WORKERS processes (pytest-xdist;
# one file per worker at a time, so module fixtures are built once). One more worker than cores, up to 4: many
# tests wait on subprocesses (sandboxes, servers, a browser). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n + 1 : 4 )))
test: setup data
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile

# The fast lane (under 3 minutes on 2 cores): everything not marked `slow` (notebooks, baseline training,
# sandboxed TF/torch models, Ray, the MLflow server, big simulations, the PostgreSQL runs of the server tests).
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
