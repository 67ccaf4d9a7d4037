# Two commands do all the set-up:  `make run` (venv, install, distill-train)  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
ARGS ?=

.PHONY: install data run test test-quick lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian (real data, no download at run time). Needs root; tests that use it skip without it.
data:
	@if [ ! -d $(FASHION_MNIST) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "warning: could not install dataset-fashion-mnist"; \
	  else echo "note: run 'sudo apt-get install -y dataset-fashion-mnist' for the Fashion-MNIST data"; fi; \
	fi

run: install
	$(BIN)/distill-train $(ARGS)

# The whole suite, slow end-to-end tests included (CI runs this), after the lint and type checks.
test: install data lint
	$(BIN)/python -m pytest

# A quick local check: the long end-to-end tests (marked slow) left out. Not a substitute for `make test`.
test-quick: install
	$(BIN)/python -m pytest -m "not slow"

# Style (ruff) and types (mypy, configured in pyproject.toml): both must report nothing.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
