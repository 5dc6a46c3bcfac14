# The two commands a newcomer needs: `make run` and `make test`.
# Each creates or updates the project's virtual environment itself (Python 3.11+ only).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test unit integration e2e faults bench lint typecheck docs venv clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Branchline needs Python 3.11 or newer; found " + sys.version.split()[0] + ". Set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Branchline and its pinned dependencies into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,local]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/branchline up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

# The fault suite at full size and the API fuzz on a longer budget (make test runs both
# small); prints the table of counts.
faults: $(STAMP)
	FAULT_SCALE=full FAULTS_REPORT=faults-report.md $(BIN)/pytest -s tests/faults
	FUZZ_EXAMPLES=100 $(BIN)/pytest tests/integration/test_fuzz.py

bench: $(STAMP)
	$(BIN)/branchline bench
	$(BIN)/branchline acquisition bench

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Writes each service's AsyncAPI document to docs/asyncapi/ (a test checks they are current).
docs: $(STAMP)
	$(BIN)/python -m devtools.docs

clean:
	rm -rf $(VENV) .branchline .pytest_cache .ruff_cache
