# Two entry points for a newcomer: `make run` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

# The tests also convert tiny checkpoints: they need the conversion extra (torch CPU, transformers, peft)
# and the ONNX extra (optimum, onnxruntime); the analyze extra is for `talesmith analyze`, scale (Ray) for batch --ray.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,convert,onnx,analyze,scale]'
	touch $(STAMP) $(TEST_STAMP)

run: $(STAMP)
	$(BIN)/talesmith tui

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) build *.egg-info
