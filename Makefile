# The venv lives in the repo so that `make test` and `make demo` work on a machine with nothing installed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch==2.13.0 resolves to the local CPU wheel; an unpinned torch would pull gigabytes of CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,serve]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(BIN)/hypertune demo

lint: $(STAMP)
	$(BIN)/ruff check hypertuning tests
	$(BIN)/ruff format --check hypertuning tests

clean:
	rm -rf $(VENV)
