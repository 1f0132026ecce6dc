# Two commands: `make demo` and `make test`. Everything else is a helper.
# python3.11 when present, else python3 (checked: >= 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
WORKDIR ?= runs/demo
PY := $(VENV)/bin/python

.PHONY: demo test lint venv dev-deps parity-deps clean

$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: sr_jax needs Python >= 3.11; '$(PYTHON)' is not. Run: make PYTHON=/path/to/python3.11"; \
	  exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(VENV)/.parity-installed: $(VENV)/.dev-installed requirements-parity.txt
	$(PY) -m pip install -q -r requirements-parity.txt
	touch $@

venv: $(VENV)/.installed
dev-deps: $(VENV)/.dev-installed
# Optional: torch/torchvision/ncnn reference implementations for the parity tests.
parity-deps: $(VENV)/.parity-installed

demo: venv
	$(PY) launch.py --config=configs/demo.py --workdir=$(WORKDIR)

lint: dev-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: dev-deps lint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=10 tests

clean:
	rm -rf $(VENV)
