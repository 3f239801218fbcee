# sharp_dirs: `make demo` runs the main job, `make test` the test suite; each does all set-up.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install data test demo bench clean

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

test: install
	$(PYTHON) -m pytest -q tests

demo: install
	$(PYTHON) experiments/demo.py

# The commands recorded in bench/RESULTS.md (bench_curvature.py without --quick is the long,
# thorough version).
bench: install
	$(PYTHON) bench/bench_conv.py --repeats 7
	$(PYTHON) bench/bench_curvature.py --quick
	$(PYTHON) bench/bench_hessian_solve.py --examples 256 --steps 20 --repeats 3
	$(PYTHON) bench/bench_input_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info
