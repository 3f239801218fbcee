# sharp_dirs: `make demo` runs the main job, `make test` the test suite; each does all set-up.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install data test demo figures bench clean

install: $(VENV)/.installed data

$(VENV)/.installed: setup.py
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e ".[test]"
	touch $@

# Real Fashion-MNIST from Debian's dataset-fashion-mnist, prepared once as a tfds dataset; the
# Jane Austen corpus from Debian's r-cran-janeaustenr (read without R).
data: $(VENV)/.installed
	@if [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q dataset-fashion-mnist || \
	     (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', then make again."; \
	    exit 1; \
	  fi; \
	fi
	$(PYTHON) -m sharp_dirs.data prepare

# One pytest worker per core (at most 4; they share one compilation cache, tests/conftest.py).
test: install
	$(PYTHON) -m pytest -q -n auto --maxprocesses=4 tests

demo: install
	JAX_COMPILATION_CACHE_DIR=$(JAX_CACHE) $(PYTHON) experiments/demo.py

# Every figure of the gallery from CPU-scale runs on real Fashion-MNIST (runs/cpu), then the
# claims report (figures/claims.md). The families' sweeps run $(JOBS) at a time (one per core;
# rescaling starts from a noise-grid checkpoint, so after it), each line of output prefixed with
# its family; each family's wall time is appended to runs/cpu/times.tsv. Finished runs are
# reused, killed ones resume; compiled programs are cached across runs in $(JAX_CACHE). Times on
# 2 idle cores: README "Reproduce the paper". Paper scale: see the README.
SHELL := /bin/bash
CPU_RUNS := runs/cpu
JOBS ?= 2
JAX_CACHE ?= $(HOME)/.cache/sharp_dirs/jax
SWEEP := JAX_COMPILATION_CACHE_DIR=$(JAX_CACHE) $(PYTHON) experiments/sweep.py
FIGURE := $(PYTHON) experiments/figures.py --out=figures
ETA_003 := $(CPU_RUNS)/noise_grid/optimizer.learning_rate=0.03,batch_size=128,num_epochs=10,seed=0
FAMILIES := noise_grid nsgd edge_of_stability rescaling sharp_analysis alignment general_shape \
  spectral_density
# family -> the sweep's arguments after --config=configs/...
ARGS_noise_grid := --config=configs/noise_grid.py:cpu
ARGS_general_shape := --config=configs/general_shape.py:cpu --sweep=seed=0
ARGS_sharp_analysis := --config=configs/sharp_analysis.py:cpu --sweep=seed=0
ARGS_alignment := --config=configs/alignment.py:cpu
ARGS_rescaling := --config=configs/rescaling.py:cpu --config.init_from=$(ETA_003) \
  --config.init_from_epoch=6
ARGS_nsgd := --config=configs/nsgd.py:cpu
ARGS_edge_of_stability := --config=configs/edge_of_stability.py:cpu
ARGS_spectral_density := --config=configs/general_shape.py:cpu --config.tracking.zoom_epochs=0.0 \
  --config.tracking.k=5 --config.analyses.spectral_density.enabled=True \
  --config.analyses.spectral_density.every=2 --config.analyses.spectral_density.num_steps=60 \
  --sweep=seed=0

.PHONY: gallery-runs $(addprefix runs-,$(FAMILIES))
gallery-runs: $(addprefix runs-,$(FAMILIES))
runs-rescaling: runs-noise_grid
$(addprefix runs-,$(FAMILIES)): runs-%: install
	@mkdir -p $(CPU_RUNS); start=$$(date +%s); set -o pipefail; \
	$(SWEEP) $(ARGS_$*) --workdir=$(CPU_RUNS)/$* 2>&1 | sed -u 's/^/[$*] /'; \
	printf '%s\t%s\t%s\n' $* $$(( $$(date +%s) - start )) "$$(date -u +%FT%TZ)" \
	  >> $(CPU_RUNS)/times.tsv

figures: install
	$(MAKE) --no-print-directory -j$(JOBS) gallery-runs
	$(FIGURE) --figure=noise_grid --runs=$(CPU_RUNS)/noise_grid
	$(FIGURE) --figure=general_shape --runs=$(CPU_RUNS)/general_shape
	$(FIGURE) --figure=step_loss_change --runs=$(CPU_RUNS)/sharp_analysis
	$(FIGURE) --figure=cross_sections --runs=$(CPU_RUNS)/sharp_analysis
	$(FIGURE) --figure=alignment --runs=$(CPU_RUNS)/alignment
	$(FIGURE) --figure=rescaling --runs=$(CPU_RUNS)/rescaling
	$(FIGURE) --figure=nsgd --runs=$(CPU_RUNS)/nsgd
	$(FIGURE) --figure=edge_of_stability '--runs=$(CPU_RUNS)/edge_of_stability,$(ETA_003)'
	$(FIGURE) --figure=spectral_density --runs=$(CPU_RUNS)/spectral_density
	$(PYTHON) experiments/claims.py --runs=$(CPU_RUNS) --out=figures
	@echo "Family wall times (s), $(CPU_RUNS)/times.tsv:"; cat $(CPU_RUNS)/times.tsv

# The commands recorded in bench/RESULTS.md (bench_curvature.py without --quick is the long,
# thorough version).
bench: install
	$(PYTHON) bench/bench_xla_cpu.py --rounds 3 --repeats 5
	$(PYTHON) bench/bench_pool.py
	$(PYTHON) bench/bench_full_batch.py
	$(PYTHON) bench/bench_conv.py --repeats 7
	$(PYTHON) bench/bench_curvature.py --quick
	$(PYTHON) bench/bench_hessian_solve.py --examples 256 --steps 20 --repeats 3
	$(PYTHON) bench/bench_input_pipeline.py
	$(PYTHON) bench/bench_train.py

clean:
	rm -rf $(VENV) build *.egg-info
