# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-localstripe
INSTALLED := $(VENV)/.installed
LS_INSTALLED := $(LS_VENV)/.installed
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

# localstripe (GPL) is a separate program the tests start; it gets its own virtualenv.
$(LS_INSTALLED):
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --upgrade pip
	$(LS_VENV)/bin/pip install -q 'localstripe==1.15.10'
	touch $@

run: $(INSTALLED)
	$(BIN)/payflowd $(ARGS)

test: $(INSTALLED) $(LS_INSTALLED)
	PAYFLOWD_LOCALSTRIPE=$(abspath $(LS_VENV))/bin/localstripe $(BIN)/pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# The executables have no .py suffix, so each is checked as a script of its own.
	for script in bin/*; do $(BIN)/mypy --strict $$script || exit 1; done

bench: $(INSTALLED)
	$(BIN)/python benchmarks/journal_bench.py

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .mypy_cache .ruff_cache
