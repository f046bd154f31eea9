# The README's two commands: `make demo` and `make test`. Both create .venv and install on first use,
# and reuse it afterwards (re-installing only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NUMBA_CACHE_DIR := $(CURDIR)/.numba-cache
export MPLBACKEND := Agg

.PHONY: setup demo test test-slow lint format bench clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: installing accelerate/peft first lets the resolver pull a CUDA torch build
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	@touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/fourfold demo --out $(DEMO_OUT)
	@echo "open $(DEMO_OUT)/report.html"

browser: $(STAMP)
	scripts/install-browser.sh $(BIN)/python

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(STAMP)
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache .numba-cache
