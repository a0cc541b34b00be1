"""Build workbooks from the transformers fixtures and recalculate them with both real engines."""

import json
import re

import numpy as np
import openpyxl
import pytest

from helpers import FIXTURE_NAMES, FIXTURES, ROOT, expected, tokens_arg, xlgpt
from xlgpt.check.verify import compare, reference_for
from xlgpt.engines.formulas import formulas_values
from xlgpt.engines.libreoffice import libreoffice_values
from xlgpt.sheet.read import read_book

# Every test here needs the five fixture books, and all but one recalculate a book with a real engine.
pytestmark = pytest.mark.engines

ENGINES = {"formulas": formulas_values, "libreoffice": libreoffice_values}


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """One workbook per fixture, built by the CLI."""
    out = {}
    for name in FIXTURE_NAMES:
        tokens, _ = expected(name)
        path = tmp_path_factory.mktemp(name) / f"{name}.xlsx"
        xlgpt("build", "--weights", FIXTURES / name, "--tokens", tokens_arg(tokens), "--out", path, check=0)
        out[name] = path
    return out


@pytest.mark.parametrize("engine", ["formulas", "libreoffice"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_engine_matches_transformers(books, name, engine):
    tokens, hf_logits = expected(name)
    book = read_book(books[name])
    assert book.tokens == tokens
    values, _ = ENGINES[engine](book, ["Logits", "Predictions"])
    logits = values["Logits"].T
    # transformers ran on the float32 weights, the book holds their shortest decimals: close, not equal
    np.testing.assert_allclose(logits, hf_logits, rtol=0, atol=1e-5)
    assert list(values["Predictions"][0].astype(int)) == list(hf_logits.argmax(-1))
    # against the reference fed the very numbers the book holds: the strict check eval makes
    _, ref = reference_for(book)
    result = compare(engine, values, ref, tokens)
    assert result["match"] and result["max_abs_logit_diff"] < 1e-9


@pytest.mark.parametrize("name", ["three_heads", "single_token"])
def test_eval_cli_json_contract(books, name):
    tokens, hf_logits = expected(name)
    run = xlgpt("eval", books[name], "--engine", "both", "--json", check=0)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["engine"] for r in results] == ["formulas", "libreoffice"]
    for r in results:
        assert r["token_id"] == r["reference_token_id"] == int(hf_logits[-1].argmax())
        assert r["match"] is True and r["max_abs_logit_diff"] <= 1e-6 and r["tokens"] == tokens


def test_eval_human_summary(books):
    _, hf_logits = expected("tiny")
    top = int(hf_logits[-1].argmax())
    run = xlgpt("eval", books["tiny"], "--engine", "libreoffice", check=0)
    [line] = run.stdout.splitlines()
    # "MATCH" alone is also in "MISMATCH": the whole line, with the verdict as the CLI prints it
    m = re.fullmatch(
        rf" *libreoffice: next token {top} \(reference {top}\), max \|logit diff\| (\S+) — MATCH \[.+\]", line
    )
    assert m, line
    assert float(m.group(1)) < 1e-9


def test_eval_detects_a_wrong_book(books, tmp_path):
    """Pointing eval at other weights of the same shape: refused, since the fingerprint differs."""
    other = tmp_path / "other"
    xlgpt(
        "weights",
        "random",
        "--layers",
        2,
        "--embd",
        16,
        "--heads",
        4,
        "--vocab",
        40,
        "--context",
        8,
        "--seed",
        99,
        "--out",
        other,
        check=0,
    )
    run = xlgpt("eval", books["tiny"], "--engine", "libreoffice", "--weights", other, check=2)
    assert "sha256" in run.stderr


def test_modified_template_changes_the_book(tmp_path):
    """The template drives the compiler: drop the position embedding and the book computes another model."""
    template = (ROOT / "templates" / "gpt2.toml").read_text()
    start = template.index('[[stage]]\ntab = "Embeddings"\nname = "position_embedding"')
    end = template.index("[[stage]]", start + 1)
    changed = template[:start] + template[end:]
    changed = changed.replace(
        'in = ["token_embedding", "position_embedding"]', 'in = ["token_embedding", "token_embedding"]'
    )
    changed = changed.replace("Residual stream x = token embedding + position embedding", "x = 2 × token embedding")
    (tmp_path / "t.toml").write_text(changed)
    tokens, _ = expected("tiny")
    book = tmp_path / "b.xlsx"
    xlgpt(
        "build",
        "--weights",
        FIXTURES / "tiny",
        "--tokens",
        tokens_arg(tokens),
        "--out",
        book,
        "--template",
        tmp_path / "t.toml",
        check=0,
    )
    wb = openpyxl.load_workbook(book)
    values = [c.value for row in wb["Embeddings"].iter_rows() for c in row if c.value is not None]
    titles = [v for v in values if isinstance(v, str) and not v.startswith("=")]
    assert "x = 2 × token embedding" in titles and not any(t.startswith("Position embedding") for t in titles)
    # the residual stream is the token embedding added to itself, and wpe is no longer on the weights tab
    formulas = [f for f in (getattr(v, "text", v) for v in values) if isinstance(f, str) and f.startswith("=")]
    assert any(re.fullmatch(r"=(\S+)\+\1", f) for f in formulas), formulas
    tensors = [c.value for c in wb["Embeddings weights"]["A"] if isinstance(c.value, str) and ".weight" in c.value]
    assert [t.split(",")[0] for t in tensors] == ["wte.weight"], tensors
    run = xlgpt("eval", book, "--engine", "libreoffice", "--json", check=1)  # no longer GPT-2
    assert json.loads(run.stdout)["match"] is False
