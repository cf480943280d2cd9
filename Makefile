# Fresh-machine entry points: `make demo` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out

.PHONY: setup demo test test-slow

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
	# The nnU-Net reference network for the equivalence tests; --no-deps because its timm
	# requirement would pull torchvision and a CUDA build of torch.
	$(PY) -m pip install -q --no-deps dynamic-network-architectures==0.4.4
	touch $@

test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(VENV)/bin/cascade demo --out $(DEMO_DIR)
