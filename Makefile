# xlgpt: `make demo` builds and verifies the default workbook, `make test` runs the tests.
PYTHON ?= python3
PYTEST_FLAGS ?= -q

.PHONY: install demo test bench fixtures clean

install:
	$(PYTHON) -m pip install -q -e '.[test]'

# the bundled Shakespeare model and its default prompt: build, then verify with both engines
demo: install
	@mkdir -p out
	$(PYTHON) -m xlgpt build --out out/demo.xlsx
	$(PYTHON) -m xlgpt eval out/demo.xlsx --engine both

test: install
	$(PYTHON) -m pytest $(PYTEST_FLAGS)

bench: install
	$(PYTHON) bench/bench.py

# dev only: needs torch and transformers
fixtures:
	$(PYTHON) tests/make_fixtures.py

clean:
	rm -rf out build *.egg-info .pytest_cache
