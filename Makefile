# xlgpt: `make demo` builds and verifies the default workbook, `make test` runs all the tests,
# `make test-fast` the ones that need no spreadsheet engine (about a minute or less).
PYTHON ?= python3
PYTEST_FLAGS ?= -q

.PHONY: install demo test test-fast bench fixtures clean

install:
	$(PYTHON) -m pip install -q -e '.[test]'

# The bundled Shakespeare model and its default prompt in a Prompt cell: build, verify the book itself with
# every engine (formulas, LibreOffice, Gnumeric), then type another prompt into a copy and verify that.
DEMO_PROMPT ?= Shall I compare thee to a summer's
demo: install
	@mkdir -p out
	$(PYTHON) -m xlgpt build --out out/demo.xlsx
	$(PYTHON) -m xlgpt eval out/demo.xlsx --engine all
	$(PYTHON) -m xlgpt eval out/demo.xlsx --engine libreoffice --prompt "$(DEMO_PROMPT)"

test: install
	$(PYTHON) -m pytest $(PYTEST_FLAGS)

test-fast: install
	$(PYTHON) -m pytest -m "not engines" $(PYTEST_FLAGS)

bench: install
	$(PYTHON) bench/bench.py

# dev only: needs torch and transformers
fixtures:
	$(PYTHON) tests/make_fixtures.py

clean:
	rm -rf out build *.egg-info .pytest_cache
