# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install demo test test-loaded lint typecheck pytest bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	PORT=$(PORT) $(BIN)/python -m demo_app

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy
	$(BIN)/pyright --pythonpath $(BIN)/python

pytest: install
	$(BIN)/pytest --cov --cov-report=term -q

test: lint typecheck pytest

# The suite beside busy-loop processes (HOGS of them, default twice the CPU count): it must
# pass on a loaded machine too. PYTEST_ARGS go to pytest.
HOGS ?=
test-loaded: install
	$(BIN)/python -m tests.loaded $(if $(HOGS),--hogs $(HOGS)) -q $(PYTEST_ARGS)

# The chaos suite's long mode (about 15 minutes): prints the table of docs/reliability.md.
# Its short mode runs in `make pytest` (tests/chaos/test_chaos.py).
chaos: install
	$(BIN)/python -m tests.chaos --long

bench: install
	$(BIN)/python -m bench.engine --json bench/.peers/last.json
	$(BIN)/python -m bench.plots bench/.peers/last.json
	$(BIN)/python -m bench.cron_lateness
	$(BIN)/python -m bench.bounded_costs
	$(BIN)/python -m bench.locks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage *.egg-info
