# Set-up is part of every target: on a fresh machine `make profile` or `make test` creates
# .venv, installs convprof with its dev extras (torch pinned by constraints.txt), then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: profile test lint sweep

$(STAMP): pyproject.toml constraints.txt
	@echo "convprof: creating $(VENV) and installing convprof with its dev extras. On a fresh machine"
	@echo "convprof: this downloads torch and torchvision from PyPI: CUDA builds, about 2.7 GB of wheels"
	@echo "convprof: (4 minutes at 100 Mbit/s) and 5.9 GB in $(VENV). Progress below; see the README"
	@echo "convprof: for using a torch you already have."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --no-cache-dir --disable-pip-version-check --progress-bar on -c constraints.txt -e ".[dev]"
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
