# multidp: `make demo` shows the whole host; `make test` runs every check CI runs.
# Both build .venv on first use (python3 >= 3.11), with the host and every driver under drivers/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DRIVERS := $(patsubst %/pyproject.toml,%,$(wildcard drivers/*/pyproject.toml))
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean image-check

$(STAMP): pyproject.toml requirements/dev.txt requirements/constraints.txt $(wildcard drivers/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -r requirements/dev.txt -e . \
		$(foreach d,$(DRIVERS),-e $(d))
	touch $(STAMP)

demo: $(STAMP)
	GRPC_VERBOSITY=ERROR $(BIN)/multidp demo

test: lint typecheck pytest image-check

lint: $(STAMP)
	$(BIN)/ruff check src tests bench .ci/image $(DRIVERS)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src/multidp $(foreach d,$(DRIVERS),$(d)/src)
	MYPYPATH=.ci/image $(BIN)/mypy --explicit-package-bases .ci/image

# Each test folder runs on its own: the drivers' tests are separate distributions.
pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests
	@for d in $(DRIVERS); do echo "== $$d"; $(BIN)/python -m pytest -q $$d/tests || exit 1; done

# Builds deploy/Dockerfile for real (podman, a Debian base from mmdebstrap) and runs the image as the DaemonSet
# does. Needs root; installs podman, runc and mmdebstrap from Debian when missing (.ci/image/README.md).
image-check: $(STAMP)
	$(BIN)/python .ci/image/check.py

bench: $(STAMP)
	GRPC_VERBOSITY=ERROR $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
