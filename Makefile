# multidp: `make demo` shows the whole host; `make test` runs every check CI runs.
# Both build .venv on first use (python3 >= 3.11), with the host and every driver under drivers/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DRIVERS := $(patsubst %/pyproject.toml,%,$(wildcard drivers/*/pyproject.toml))
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml requirements/dev.txt requirements/constraints.txt $(wildcard drivers/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -r requirements/dev.txt -e . \
		$(foreach d,$(DRIVERS),-e $(d))
	touch $(STAMP)

demo: $(STAMP)
	GRPC_VERBOSITY=ERROR $(BIN)/multidp demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench $(DRIVERS)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src/multidp $(foreach d,$(DRIVERS),$(d)/src)

# Each test folder runs on its own: the drivers' tests are separate distributions.
pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests
	@for d in $(DRIVERS); do echo "== $$d"; $(BIN)/python -m pytest -q $$d/tests || exit 1; done

bench: $(STAMP)
	GRPC_VERBOSITY=ERROR $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
