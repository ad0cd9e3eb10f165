# One command to set up and run the demo, one to set up and run the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The gpu extra (nvidia-ml-py: MLflow's GPU system metrics) only where there is an NVIDIA GPU.
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo ,gpu)
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test test-fast lint bench clean setup gpu-check

setup: $(STAMP)

# The tests need the test tools and the demo extra (they use the demo's digits). infra/install.py
# installs with uv under pip's settings (pip where uv is missing): the same versions, 9x faster.
$(STAMP): pyproject.toml infra/install.py
	$(PY) infra/install.py $(VENV) '.[test,demo$(GPU)]'
	touch $(STAMP)

# The demo needs the package and its demo extra (scikit-learn's digits).
$(DEMO_STAMP): pyproject.toml infra/install.py
	$(PY) infra/install.py $(VENV) '.[demo$(GPU)]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/hypernym demo

# On a GPU machine: every GPU path once (docs/gpu.md); `make gpu-check ARGS=--cpu-dry-run` runs
# it on the CPU at toy sizes. Installs only where there is no venv yet, so a machine without
# network access runs it on what is installed.
ARGS ?=
gpu-check:
	test -x $(BIN)/hypernym || $(MAKE) $(DEMO_STAMP)
	$(BIN)/hypernym gpu-check --out gpu-check $(ARGS)

# Bytecode for the package and the tests first: where PYTHONDONTWRITEBYTECODE is set, each of the
# suite's hundreds of processes would otherwise compile them again. Two pytest-xdist workers, one
# module each at a time: much of the suite waits on servers, Ray start-up and outages it stages,
# and the other worker computes meanwhile. OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep
# at once instead of spinning, so the two workers' threads do not spin on each other's cores
# (the thread count, and so every figure, stays as it is).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m compileall -q platform tests infra examples pipelines >/dev/null
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -ra --durations=15 \
		-n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check platform tests examples pipelines

clean:
	rm -rf $(VENV) .hypernym build *.egg-info
