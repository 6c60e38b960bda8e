# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv with pip when it is missing and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# A stamp per extras set: re-install when pyproject.toml changes.
STAMP   = $(VENV)/.installed

.PHONY: demo test test-fast test-gpu test-acceptance lint install clean-venv toy-acceptance bench chromium label-load label-screenshots bench-vlm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,eval,app]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mmalign demo

# The labeling app's browser test drives Debian's Chromium (Playwright's own download is
# not reachable); installed here when missing (as root).
chromium:
	@command -v chromium >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update && \
	  apt-get -o DPkg::Lock::Timeout=600 install -y chromium; }

# `make test` runs without it where it cannot be installed (no root, no apt-get): the browser
# test then skips itself.
# The suite runs in TEST_WORKERS processes (pytest-xdist, a test file per worker at a time),
# each torch on one thread: two OpenMP pools on two cores busy-wait each other. On this 2-core
# machine two workers take the suite from about 21 to 12 minutes; TEST_WORKERS=0 runs it in
# one process (torch's own thread count).
TEST_WORKERS ?= 2
PYTEST = $(if $(filter 0,$(TEST_WORKERS)),$(BIN)/python -m pytest -q,\
  OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile)

test: $(STAMP)
	@$(MAKE) --no-print-directory chromium || echo "make test: Chromium could not be" \
	  "installed (apt-get needs root on Debian/Ubuntu); the browser test will be skipped"
	$(PYTEST)

# The suite without the tests marked slow (servers, a browser, sampling the toy models).
test-fast: $(STAMP)
	$(PYTEST) -m 'not slow'

# The checks that need a CUDA GPU (tests marked gpu: device placement, half precision,
# resume, compile on CUDA); without one each is skipped, with the reason.
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu -rs

# The slow tests at the full size of their issues' acceptance, where `make test` runs them
# scaled down (MMALIGN_ACCEPTANCE=1): the labeling app's 32 annotators x 200 votes with a
# SIGKILL and restart on SQLite and PostgreSQL (`make test`: 40 votes each).
test-acceptance: $(STAMP)
	MMALIGN_ACCEPTANCE=1 $(BIN)/python -m pytest -q -m slow

# Issue acceptance on the toy world (about 10 min per recipe on 2 CPU cores): train, then
# the win rate over the base (toy-sd; toy-flow for flow_*) on 200 held-out prompts. Results
# under runs/acceptance/.
toy-acceptance: $(STAMP)
	for r in dpo mapo smpo flow_dpo flow_mapo; do \
	  $(BIN)/mmalign train configs/toy/$$r.yaml output_dir=runs/acceptance/$$r train.resume_from=latest && \
	  $(BIN)/mmalign eval winrate --tuned runs/acceptance/$$r --out runs/acceptance/$$r/eval || exit 1; \
	done
	for r in dpo_style mapo_style; do \
	  $(BIN)/mmalign train configs/toy/$$r.yaml output_dir=runs/acceptance/$$r train.resume_from=latest && \
	  $(BIN)/mmalign eval winrate --tuned runs/acceptance/$$r --scorers toy:style,toy:fidelity \
	    --out runs/acceptance/$$r/eval || exit 1; \
	done

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/diffusion_step.py --out runs/bench/diffusion_step.json
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/scoring.py --out runs/bench/scoring.json
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/toy_sampling.py --out runs/bench/toy_sampling.json

# mmalign's VLM DPO step and scores against TRL's DPOTrainer (the `bench` extra installs TRL).
bench-vlm: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/vlm_vs_trl.py --models toy,llava,qwen \
	  --out runs/bench/vlm_vs_trl.json

# The labeling app: 32 annotators x 200 votes through gradio_client, then vote latency at
# 1, 8 and 32 annotators; screenshots of the labeling and admin pages.
label-load: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/label_load.py --levels 32 --votes 200 \
	  --clients gradio_client --kill-after 5000 --out runs/bench/label_load_full.json
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/label_load.py --out runs/bench/label_load.json

label-screenshots: $(STAMP) chromium
	OMP_NUM_THREADS=1 $(BIN)/python -m mmalign_label.screenshots --out apps/label/screenshots

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-venv:
	rm -rf $(VENV)
