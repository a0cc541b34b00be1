# xlgpt: `make demo` builds and verifies the default workbook, `make test` runs all the tests,
# `make test-fast` the ones that need no spreadsheet engine (about a minute or less).
PYTHON ?= python3
PYTEST_FLAGS ?= -q

.PHONY: install demo test test-fast bench fixtures clean

install:
	$(PYTHON) -m pip install -q -e '.[test]'

# The bundled Shakespeare model and its default prompt in a Prompt cell: build, verify with LibreOffice,
# type another prompt into a copy; then the same book with its tokenizer sized to the prompt, which the
# formulas engine can afford, verified with both engines.
DEMO_PROMPT ?= Shall I compare thee to a summer's
demo: install
	@mkdir -p out
	$(PYTHON) -m xlgpt build --out out/demo.xlsx
	$(PYTHON) -m xlgpt eval out/demo.xlsx --engine libreoffice
	$(PYTHON) -m xlgpt eval out/demo.xlsx --engine libreoffice --prompt "$(DEMO_PROMPT)"
	$(PYTHON) -m xlgpt build --capacity fit --out out/demo-fit.xlsx
	$(PYTHON) -m xlgpt eval out/demo-fit.xlsx --engine both

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
