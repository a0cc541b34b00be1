# xlgpt: `make demo` builds and verifies the default workbook, `make test` runs the tests.
PYTHON ?= python3
PYTEST_FLAGS ?= -q

.PHONY: install demo test bench fixtures clean

install:
	$(PYTHON) -m pip install -q -e '.[test]'

demo: install
	$(PYTHON) -m xlgpt weights random --layers 2 --embd 32 --heads 4 --vocab 100 --context 16 --seed 1 --out out/demo-ckpt 2>/dev/null || true
	$(PYTHON) -m xlgpt build --weights out/demo-ckpt --tokens 5,17,42,7 --out out/demo.xlsx
	$(PYTHON) -m xlgpt predict --weights out/demo-ckpt --tokens 5,17,42,7 --top-k 3
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
