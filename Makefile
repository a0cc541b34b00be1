# xlgpt: `make demo` builds and verifies the default workbook, `make test` runs all the tests,
# `make test-fast` the lint and the tests that need no office suite (37 s on a 2-core machine).
PYTHON ?= python3
PYTEST_FLAGS ?= -q

.PHONY: install system demo screenshots lint test test-fast bench fixtures clean

# pip runs again only when pyproject.toml changes (the stamp); `make install -B` forces it
install: build/installed

# LibreOffice (with python3-uno) and Gnumeric: installed when missing, as root or with sudo; else one line says so,
# and the demo and the tests use the engines pip installed (IronCalc, formulas)
system:
	tools/system-packages

build/installed: pyproject.toml
	$(PYTHON) -m pip install -q -e '.[test]'
	@mkdir -p build && touch $@

# The bundled Shakespeare model and its default prompt in a Prompt cell: build it and verify every number the
# book shows with every engine; type another prompt into a copy; then the instruments: ablate head 2 of layer 0,
# steer by an SAE feature, score every head on a repeated random prompt (the Heads tab), patch every activation
# of a corrupted run with the clean run's (the Patching tab: xlgpt patch fills its heatmaps), and generate text with
# the spreadsheet doing every step; then train it for 10 steps with the spreadsheet computing every gradient,
# and check the training book it leaves.
# Each eval line names the engine it used: `auto`, the fastest installed that can compute the book.
DEMO_PROMPT ?= Shall I compare thee to a summer's
PATCHING = --prompt "I know him, and I love" --corrupted "I know her, and I love" --answer " him" --foil " her"
demo: install system
	@mkdir -p out
	$(PYTHON) -m xlgpt build --out out/demo.xlsx
	$(PYTHON) -m xlgpt eval out/demo.xlsx --engine all
	$(PYTHON) -m xlgpt eval out/demo.xlsx --prompt "$(DEMO_PROMPT)"
	$(PYTHON) -m xlgpt eval out/demo.xlsx --set "HeadSwitches[0,2]=0"
	$(PYTHON) -m xlgpt build --steer-feature 40 --steer-coef 2 --out out/demo-steered.xlsx
	$(PYTHON) -m xlgpt eval out/demo-steered.xlsx
	$(PYTHON) -m xlgpt build --repeat-random 9 --out out/demo-heads.xlsx
	$(PYTHON) -m xlgpt eval out/demo-heads.xlsx
	$(PYTHON) -m xlgpt build --weights shakespeare-induction --repeat-random 9 --out out/demo-induction.xlsx
	$(PYTHON) -m xlgpt eval out/demo-induction.xlsx
	$(PYTHON) -m xlgpt build $(PATCHING) --out out/demo-patching.xlsx
	$(PYTHON) -m xlgpt patch out/demo-patching.xlsx --out out/demo-patched.xlsx
	$(PYTHON) -m xlgpt eval out/demo-patched.xlsx
	$(PYTHON) -m xlgpt generate --steps 20 --temperature 0.8 --top-k 40 --seed 7
	rm -rf out/trained
	$(PYTHON) -m xlgpt train --steps 10 --out out/trained
	$(PYTHON) -m xlgpt eval out/trained/train.xlsx
	@echo "Open out/demo.xlsx in Excel, LibreOffice or Gnumeric: start on its Guide tab."
	@echo "out/trained/train.xlsx trains the model: its Loss tab charts the 10 steps xlgpt train took."

# The README's pictures of the default book (dev: needs poppler-utils)
screenshots: install
	@mkdir -p out docs
	$(PYTHON) -m xlgpt build --out out/demo.xlsx
	$(PYTHON) tools/screenshots.py out/demo.xlsx docs "guide=Guide!A1:D40" "prompt=Prompt!A1:F32" \
	    "attention=Layer 0!A749:U770" "lens=Logit lens!A1:U22" "attribution=Attribution!A1:H20" \
	    "interventions=Interventions!A1:H24" "features=Features!A1:K21"
	$(PYTHON) -m xlgpt build --repeat-random 9 --out out/demo-heads.xlsx
	$(PYTHON) tools/screenshots.py out/demo-heads.xlsx docs "heads=Heads!A66:U96"
	$(PYTHON) -m xlgpt build --weights shakespeare-induction --repeat-random 9 --out out/demo-induction.xlsx
	$(PYTHON) tools/screenshots.py out/demo-induction.xlsx docs "induction=Heads!A66:U96"
	$(PYTHON) -m xlgpt build $(PATCHING) --out out/demo-patching.xlsx
	$(PYTHON) -m xlgpt patch out/demo-patching.xlsx --out out/demo-patched.xlsx
	$(PYTHON) tools/screenshots.py out/demo-patched.xlsx docs "patching=Patching!A1:J72"
	rm -rf out/trained
	$(PYTHON) -m xlgpt train --steps 10 --out out/trained
	$(PYTHON) tools/screenshots.py out/trained/train.xlsx docs "loss=Loss!A1:N30" \
	    "backward=Layer 1 backward!A827:T866"

# Both run the tests in parallel, one pytest-xdist worker per CPU (PYTEST_WORKERS=0: in this process, one at a
# time). Measured on a 2-core machine: make test-fast, 37 s; make test, 9 min.
PYTEST_WORKERS ?= auto

test: install system
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) --durations=25 $(PYTEST_FLAGS)

test-fast: install lint
	$(PYTHON) -m pytest -m "not engines" -n $(PYTEST_WORKERS) $(PYTEST_FLAGS)

# the 124M figures take 5 to 45 minutes each, so they are apart: generation at context 16 and 64 (LibreOffice's
# 2 threads and 1), IronCalc against LibreOffice on the medium and 124M books, the 124M book's lens at every
# position against the last, one 124M block's products in each layout (formula groups; threading off, 1, 2)
#   python3 bench/bench.py --generate-124m 16; python3 bench/bench.py --generate-124m 64
#   python3 bench/bench.py --engines-at-scale 16; python3 bench/bench.py --lens-124m 16
#   python3 bench/layouts.py
bench: install
	$(PYTHON) bench/bench.py
	$(PYTHON) bench/bench.py --generate 20
	$(PYTHON) bench/bench.py --engines
	$(PYTHON) bench/bench.py --train 5

# The architecture: the layers contract (pyproject.toml: each module imports only from the layers below it)
# and ruff's lint and format rules
lint: install
	lint-imports
	ruff check xlgpt bench tools tests
	ruff format --check xlgpt bench tools tests

# dev only: needs torch and transformers (and transformer-lens for the patching fixture)
fixtures:
	$(PYTHON) tests/make_fixtures.py
	$(PYTHON) tests/make_training_fixtures.py
	$(PYTHON) tests/make_patching_fixtures.py  # and transformer-lens 3.x: see its docstring

clean:
	rm -rf out build *.egg-info .pytest_cache
