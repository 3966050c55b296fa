# Two entry points for a newcomer: `make run` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

# The tests also convert tiny checkpoints: they need the conversion extra (torch CPU, transformers, peft)
# and the ONNX extra (optimum, onnxruntime); the analyze extra is for `talesmith analyze`, scale (Ray) for batch --ray,
# serve (FastAPI, uvicorn) for `talesmith serve`.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,convert,onnx,analyze,scale,serve]'
	touch $(STAMP) $(TEST_STAMP)

run: $(STAMP)
	$(BIN)/talesmith tui

# The lint and type checks run first: a finding fails the test run as a failing test would.
test: lint
	$(BIN)/python -m pytest -q

# ruff (lint and format check) over the tree, then mypy over the package as it is imported (talesmith.*):
# its folders are linked under one talesmith/ namespace in build/typecheck.
TYPECHECK := build/typecheck
lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/talesmith
	for part in runtime convert cli tui; do ln -s $(CURDIR)/$$part $(TYPECHECK)/talesmith/$$part; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/build/mypy-cache -p talesmith

bench: $(STAMP)
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) build *.egg-info
