# Set-up is part of every target: on a fresh machine `make profile` or `make test` creates
# .venv, installs convprof with its dev extras (torch pinned by constraints.txt), then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: profile test lint sweep

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

profile: $(STAMP)
	$(BIN)/convprof profile torchvision:mobilenet_v2

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src
	$(BIN)/mypy

sweep: $(STAMP)
	$(BIN)/python scripts/torchvision_sweep.py --markdown
