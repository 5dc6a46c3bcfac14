# The two commands a newcomer needs: `make run` and `make test`.
# Each creates or updates the project's virtual environment itself (Python 3.11+ only).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: browser-deps run test unit integration e2e faults bench lint typecheck docs venv clean

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

test: $(STAMP) browser-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# The browser tests (tests/browser) drive Debian's Chromium and need a CJK font, or the
# Chinese pages render as empty boxes. Installed here when missing and possible (root with
# apt-get); otherwise this says how, or how to skip that layer (BROWSER_TESTS=0).
APT_BROWSER := DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-cjk
browser-deps:
	@if [ "$${BROWSER_TESTS:-1}" != "0" ] && { [ ! -x "$${CHROMIUM:-/usr/bin/chromium}" ] || \
	    ! fc-list 2>/dev/null | grep -q "Noto Sans CJK"; }; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Chromium and the Noto CJK fonts for the browser tests ..."; \
	    $(APT_BROWSER) >/dev/null 2>&1 || { apt-get update -q >/dev/null && $(APT_BROWSER) >/dev/null; }; \
	  else \
	    echo "The browser tests need Chromium and a CJK font: 'sudo apt-get install chromium fonts-noto-cjk'"; \
	    echo "(or set CHROMIUM=/path/to/chromium), or skip that layer with BROWSER_TESTS=0 make test"; \
	    exit 1; \
	  fi; \
	fi

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
	$(BIN)/branchline bench --replicas 2
	$(BIN)/branchline acquisition bench
	$(BIN)/branchline marc import-bench --records 150000
	$(BIN)/branchline marc bench

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Writes each service's AsyncAPI document to docs/asyncapi/ (a test checks they are current).
docs: $(STAMP)
	$(BIN)/python -m devtools.docs

clean:
	rm -rf $(VENV) .branchline .pytest_cache .ruff_cache
