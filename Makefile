# malsori — the two commands a new machine needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pip arguments for the CPU build of PyTorch on machines that do not carry it locally,
# e.g. TORCH_INDEX="--index-url <your PyTorch CPU wheel index>".
TORCH_INDEX ?=
DEMO_DIR ?= exp/demo

.PHONY: setup demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA found: installing the default PyTorch build"; $(PY) -m pip install -q "torch>=2.4"; \
	else \
		echo "No CUDA: installing the CPU build torch==2.13.0"; $(PY) -m pip install -q torch==2.13.0 $(TORCH_INDEX); \
	fi
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

demo: setup
	$(VENV)/bin/malsori demo --out $(DEMO_DIR)

test: setup
	$(PY) -m pytest -q -x --durations=15

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) exp .pytest_cache
