"""Head detectors (the Heads tab): each head's previous-token, induction and duplicate-token score, as
TransformerLens' detect_head computes them with the "mul" measure, on the book's own prompt."""

import json

import numpy as np
import openpyxl
import pytest

from helpers import BUNDLED, FIXTURES, assert_clean_error, xlgpt
from xlgpt.model import reference
from xlgpt.model.checkpoint import as_written, load
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book


def transformer_lens_patterns(tokens):
    """TransformerLens' head_detector.py patterns [query, key], step by step as it builds them (torch.roll,
    a zero first column, torch.tril), in NumPy."""
    n = len(tokens)
    previous = np.tril(np.eye(n, k=-1))
    token_pattern = np.tile(tokens, (n, 1))
    eq_mask = np.equal(token_pattern, token_pattern.T).astype(int)
    np.fill_diagonal(eq_mask, 0)
    duplicate = np.tril(eq_mask.astype(float))
    shifted = np.roll(duplicate, 1, axis=1)
    induction = np.tril(np.concatenate([np.zeros((n, 1)), shifted[:, 1:]], axis=1))
    return {C.PREVIOUS_TOKEN_SCORES: previous, C.INDUCTION_SCORES: induction, C.DUPLICATE_TOKEN_SCORES: duplicate}


def cached(book, name):
    """A defined name's cached values, as a viewer that does not calculate shows them."""
    rect = read_book(book).names[name]
    ws = openpyxl.load_workbook(book, data_only=True)[rect.sheet]
    return np.array(rect.read(lambda r, c: ws.cell(r, c).value), dtype=float)


@pytest.mark.parametrize(
    "shape, tokens",
    [("tiny", [5, 9, 3, 5, 9, 3, 5]), pytest.param("three_heads", [1, 2, 1, 1, 7], marks=pytest.mark.engines)],
)
def test_scores_are_detect_heads(tmp_path, shape, tokens):
    """The book's scores (cached, and as IronCalc computes them) are sum(A * D) / sum(A) for each layer's and
    head's attention weights A and TransformerLens' patterns D."""
    book = tmp_path / "book.xlsx"
    weights = FIXTURES / shape
    xlgpt("build", "--weights", weights, "--tokens", ",".join(map(str, tokens)), "--out", book, check=0)
    cache = reference.run(as_written(load(weights)), tokens)[1]
    attention = [value for name, _, value in cache["stages"] if name == "attention"]  # [head, query, key]
    for name, pattern in transformer_lens_patterns(tokens).items():
        want = [[(a * pattern).sum() / a.sum() for a in layer] for layer in attention]
        assert np.allclose(cached(book, name), want, rtol=0, atol=1e-12), name
    run = xlgpt("eval", book, "--engine", "ironcalc", "--json", check=0)
    result = json.loads(run.stdout)
    assert result["match"] and all(result["checks"][name] < 1e-12 for name in C.HEAD_SCORES), result["checks"]
    # fewer tokens (LastPosition): the scores of that prompt, the later positions left out as padding is
    short = tokens[:-2]
    attention = [
        value for name, _, value in reference.run(as_written(load(weights)), short)[1]["stages"] if name == "attention"
    ]
    run = xlgpt("eval", book, "--engine", "ironcalc", "--json", "--set", f"LastPosition={len(short)}", check=0)
    result = json.loads(run.stdout)
    assert result["match"] and all(result["checks"][name] < 1e-12 for name in C.HEAD_SCORES), result["checks"]
    pattern = transformer_lens_patterns(short)[C.PREVIOUS_TOKEN_SCORES]
    assert not np.allclose(
        cached(book, C.PREVIOUS_TOKEN_SCORES), [[(a * pattern).sum() / a.sum() for a in layer] for layer in attention]
    )


def test_repeat_random_builds_the_induction_prompt(tmp_path):
    """--repeat-random N: N seeded random ids, then the same N again; another seed, other ids."""
    books = [tmp_path / f"{seed}.xlsx" for seed in (3, 3, 4)]
    for book, seed in zip(books, (3, 3, 4)):
        xlgpt("build", "--weights", FIXTURES / "tiny", "--repeat-random", 4, "--seed", seed, "--out", book, check=0)
    ids = [read_book(book).tokens for book in books]
    assert ids[0] == ids[1] != ids[2]
    assert len(ids[0]) == 8 and ids[0][:4] == ids[0][4:]
    assert all(0 <= i < 40 for i in ids[0])


@pytest.mark.parametrize(
    "args, words",
    [
        (("--weights", FIXTURES / "tiny", "--repeat-random", 5), ("twice 5 tokens", "context of 8")),
        (("--repeat-random", 4, "--prompt", "hi"), ("--repeat-random", "not two")),
    ],
)
def test_repeat_random_refuses_what_cannot_be(tmp_path, args, words):
    assert_clean_error(xlgpt("build", *args, "--out", tmp_path / "x.xlsx"), *words)
    assert not (tmp_path / "x.xlsx").exists()


@pytest.mark.engines  # the bundled model's repeated-tokens book in LibreOffice (~10 s)
def test_bundled_repeated_tokens_with_libreoffice(tmp_path):
    book = tmp_path / "book.xlsx"
    xlgpt("build", "--weights", BUNDLED, "--repeat-random", 9, "--out", book, check=0)
    result = json.loads(xlgpt("eval", book, "--engine", "libreoffice", "--json", check=0).stdout)
    assert result["match"] and set(C.HEAD_SCORES) <= set(result["checks"]), result


@pytest.mark.engines  # a bundled model's book read whole (~5 s)
def test_the_induction_model_has_induction_heads(tmp_path):
    """weights/shakespeare-induction (tools/train_induction.py) shows the induction lesson offline: on 9 random
    tokens twice, two heads of layer 1 score ten times the bundled model's best (0.03), and IronCalc agrees."""
    book = tmp_path / "induction.xlsx"
    xlgpt("build", "--weights", "shakespeare-induction", "--repeat-random", 9, "--out", book, check=0)
    scores = cached(book, C.INDUCTION_SCORES)
    assert min(sorted(scores[1])[-2:]) > 0.2 and scores[0].max() < 0.1, scores
    result = json.loads(xlgpt("eval", book, "--engine", "ironcalc", "--json", check=0).stdout)
    assert result["match"] and result["checks"][C.INDUCTION_SCORES] < 1e-12
