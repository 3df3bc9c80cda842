# Two commands a newcomer needs: `make demo` and `make test`. Both set everything up first and are
# safe to run again.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: setup system data demo test lint unit clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build here.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

system:
	bash scripts/system-deps.sh

data: setup
	$(BIN)/latentspace data fetch mnist fashion-mnist

demo: data
	$(BIN)/python -m latentspace.demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: data system lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
