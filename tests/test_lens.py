"""The logit lens at the prompt's last token only (`build --lens last`; the default where the lens at every
position would pass contract.LENS_EVERY_POSITION_UP_TO cells, as a 124M book's does): one column per residual
stream, which follows LastPosition and equals the reference's lens at that position, in every engine."""

import json

import numpy as np
import pytest

from helpers import BUNDLED, FIXTURES, xlgpt
from xlgpt.compile.lower import lens_for
from xlgpt.compile.template import GENERATE_TEMPLATE
from xlgpt.engines.ironcalc import Model
from xlgpt.model import reference
from xlgpt.model.checkpoint import Config, as_written, load
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book

TOKENS = [5, 1, 4, 2, 3]


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp("lens") / "book.xlsx"
    tokens = "5,1,4,2,3"
    run = xlgpt("build", "--weights", FIXTURES / "three_layers", "--tokens", tokens, "--lens", "last", "--out", out)
    assert run.returncode == 0, run.stderr
    assert "logit lens: at the prompt's last token only" in run.stdout
    return out


def test_the_lens_reads_the_last_position_as_the_reference_does(book):
    info = read_book(book)
    assert info.about.lens == C.LENS_LAST
    tokens, probs = info.names[C.LENS_TOP_TOKENS], info.names[C.LENS_TOP_PROBABILITIES]
    assert (tokens.height, tokens.width) == (3 + 1, 1)  # the embeddings and three layers, one column
    model = Model(book, info.sheets)
    weights = as_written(load(FIXTURES / "three_layers"))
    last = info.names[C.LAST_POSITION].at(0)
    for n in (5, 2):  # the whole prompt, then LastPosition moved back to its second token
        model.set_number(last.sheet, last.top, last.left, n)
        model.evaluate()
        _, cache = reference.run(weights, TOKENS[:n])
        want_ids, want_probs = reference.logit_lens(weights, cache)
        np.testing.assert_array_equal(model.read(tokens)[:, 0], want_ids[:, -1])
        np.testing.assert_allclose(model.read(probs)[:, 0], want_probs[:, -1], rtol=1e-9)


def test_eval_checks_it_and_prints_the_position_it_reads(book):
    run = xlgpt("eval", book, "--engine", "ironcalc", "--json", "--set", "LastPosition=2")
    result = json.loads(run.stdout)
    assert run.returncode == 0 and result["match"], run.stdout
    assert C.LENS_TOP_TOKENS in result["checks"] and result["lens_position"] == 1


def test_a_large_lens_reads_the_last_position_by_default():
    gpt2 = Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    assert lens_for(gpt2, 16) == C.LENS_LAST  # 13 x 50,257 x 16 = 10.5M cells at every position
    assert lens_for(gpt2, 3) == C.LENS_EVERY  # 2.0M
    bundled = load(BUNDLED).config
    assert lens_for(bundled, 64) == C.LENS_EVERY  # the bundled model's books keep the lens at every position


def test_a_book_without_the_lens_says_nothing_of_it(tmp_path):
    """The generation template has no lens: its book records no Lens cell, and build prints nothing about a lens."""
    for lens in ([], ["--lens", "last"]):
        out = tmp_path / f"gen{len(lens)}.xlsx"
        args = ["--weights", FIXTURES / "tiny", "--tokens", "1,2", "--template", GENERATE_TEMPLATE, *lens]
        run = xlgpt("build", *args, "--out", out)
        assert run.returncode == 0 and "logit lens" not in run.stdout, run.stdout + run.stderr
        assert C.LENS not in read_book(out).names


@pytest.mark.engines
def test_libreoffice_and_gnumeric_compute_it(book):
    for engine in ("libreoffice", "gnumeric"):
        run = xlgpt("eval", book, "--engine", engine, "--set", "LastPosition=3")
        assert run.returncode == 0 and "MATCH" in run.stdout, (engine, run.stdout, run.stderr)
