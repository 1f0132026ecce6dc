# Two commands: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV ?= .venv
WORKDIR ?= runs/demo
PY := $(VENV)/bin/python

.PHONY: demo test lint venv dev-deps parity-deps clean

$(VENV)/.installed: requirements.txt pyproject.toml
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
