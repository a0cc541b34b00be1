"""IronCalc (PyPI `ironcalc`, in this process: no office suite) computes every kind of token-id book as the NumPy
reference does: every fixture shape, steered and switched books, SAE features, training books (SGD and AdamW) and
the generation loop; it computes what a copy's edited cells give, not what the book cached."""

import json
import shutil
from dataclasses import replace

import pytest

from helpers import FIXTURES, xlgpt
from xlgpt.check.verify import fastest_engine, live_engine_for
from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book

SHAPES = ["tiny", "single_token", "three_heads", "three_layers", "full_context", "hf_layout"]


def built(tmp_path, *args):
    out = tmp_path / "book.xlsx"
    xlgpt("build", *args, "--out", out, check=0)
    return out


def verdict(book, *options):
    """eval through IronCalc: its one result."""
    run = xlgpt("eval", book, "--engine", "ironcalc", "--json", *options)
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert result["engine"] == "ironcalc"
    return run, result


def assert_matches(book, *options):
    run, result = verdict(book, *options)
    assert run.returncode == 0 and result["match"], (run.stdout, run.stderr)
    assert max(result["checks"].values()) < 1e-9, result["checks"]
    return result


@pytest.mark.parametrize("shape", SHAPES)
def test_every_fixture_shape_matches(tmp_path, shape):
    tokens = "1,2,3" if shape != "single_token" else "1"
    assert_matches(built(tmp_path, "--weights", FIXTURES / shape, "--tokens", tokens))


def test_switches_and_the_sampler_match(tmp_path):
    book = built(tmp_path, "--weights", FIXTURES / "tiny", "--tokens", "1,2,3")
    edits = ("HeadSwitches[1,2]=0", "Temperature=0.8", "Seed=3", "TopK=5", "AttributionToken=7")
    result = assert_matches(book, *[a for e in edits for a in ("--set", e)])
    assert {C.SAMPLED_TOKEN, C.TOP_K_TOKENS, C.ATTRIBUTION_TABLE, C.LENS_TOP_TOKENS} <= set(result["checks"])


@pytest.mark.parametrize(  # the bundled model's books: ~10 s each, so in the slow suite
    "args, edits",
    [
        pytest.param((), (), marks=pytest.mark.engines),
        pytest.param((), ("HeadSwitches[0,2]=0", "Temperature=0.8", "Seed=3", "TopK=5"), marks=pytest.mark.engines),
        pytest.param(("--steer-from", " thee", "--steer-to", " you"), (), marks=pytest.mark.engines),  # ActAdd
        # an SAE feature
        pytest.param(
            ("--steer-feature", "40", "--steer-coef", "2"), ("AttributionToken=198",), marks=pytest.mark.engines
        ),
    ],
    ids=["bundled", "switched-and-sampled", "actadd", "sae-feature"],
)
def test_bundled_books_match(tmp_path, args, edits):
    book = built(tmp_path, "--no-prompt-cell", *args)
    result = assert_matches(book, *[a for e in edits for a in ("--set", e)])
    assert {C.LOGITS, C.PROBABILITIES, C.LENS_TOP_TOKENS, C.ATTRIBUTION_TABLE, C.SAMPLED_TOKEN} <= set(result["checks"])


@pytest.mark.parametrize("optimizer", [pytest.param("sgd", marks=pytest.mark.engines), "adamw"])  # sgd: slow suite
def test_training_books_match(tmp_path, optimizer):
    """The loss, the backward pass, every gradient and the update."""
    book = built(tmp_path, "--weights", FIXTURES / "tiny", "--tokens", "1,2,3", "--train", "--optimizer", optimizer)
    result = assert_matches(book)
    assert {C.LOSS, C.GRADIENT + "wte_weight", C.UPDATED + "wte_weight"} <= set(result["checks"])


def test_edited_token_ids_are_computed_not_read(tmp_path):
    """Other token ids typed into a copy: IronCalc computes their logits (the book's cached ones are the old
    ids'), and the reference agrees."""
    book = built(tmp_path, "--weights", FIXTURES / "tiny", "--tokens", "1,2,3")
    _, before = verdict(book)
    _, after = verdict(book, "--set", "TokenIds[0]=7", "--set", "TokenIds[2]=30")
    assert after["match"] and max(after["checks"].values()) < 1e-9, after
    assert after["tokens"] == [7, 2, 30] and after["token_id"] == after["reference_token_id"]
    assert before["tokens"] == [1, 2, 3]


def test_generate_with_ironcalc_samples_as_the_reference(tmp_path):
    run = xlgpt(
        "generate",
        "--weights",
        FIXTURES / "tiny",
        "--tokens",
        "1,2",
        "--steps",
        3,
        "--engine",
        "ironcalc",
        "--temperature",
        "0.8",
        "--seed",
        "3",
        "--json",
    )
    result = json.loads(run.stdout.splitlines()[-1])
    assert run.returncode == 0 and result["match"] and result["engine"] == "ironcalc", result
    assert result["tokens"] == result["reference_tokens"] and len(result["tokens"]) == 3


@pytest.mark.engines  # slow (~30 s): two steps of the bundled model, its trained book built and checked
def test_train_with_ironcalc_takes_the_references_steps(tmp_path):
    """Two AdamW steps, then eval of the book train leaves: its moments are as small as 1e-12, which IronCalc reads
    in full (the formulas engine rounds numbers to 15 decimal places)."""
    out = tmp_path / "trained"
    run = xlgpt(
        "train",
        "--prompt",
        "Shall I compare",
        "--steps",
        2,
        "--optimizer",
        "adamw",
        "--engine",
        "ironcalc",
        "--out",
        out,
        "--json",
    )
    result = json.loads(run.stdout.splitlines()[-1])
    assert run.returncode == 0 and all(s["diff"] < 1e-9 for s in result["steps"]), result
    assert (out / "train.xlsx").is_file()
    assert_matches(out / "train.xlsx")


def test_auto_is_ironcalc_for_a_token_ids_book(tmp_path):
    run = xlgpt("eval", built(tmp_path, "--weights", FIXTURES / "tiny", "--tokens", "1,2,3"), "--json")
    assert [json.loads(line)["engine"] for line in run.stdout.splitlines()] == ["ironcalc"]


def test_auto_takes_libreoffice_at_124m_and_ironcalc_where_it_is_absent(tmp_path, monkeypatch):
    """IronCalc is the fastest engine up to ~20M cells, LibreOffice beyond (3x faster at 124M, measured); without
    LibreOffice a 124M book still has IronCalc, and a book past its memory limit has neither."""
    book = read_book(built(tmp_path, "--weights", FIXTURES / "tiny", "--tokens", "1,2,3"))
    at_124m, huge = replace(book, est_cells=130_000_000), replace(book, est_cells=400_000_000)  # gpt2-medium: 361M
    assert fastest_engine(book, {}) == live_engine_for(book, "auto") == "ironcalc"
    if shutil.which("soffice"):
        assert fastest_engine(at_124m, {}) == live_engine_for(at_124m, "auto") == "libreoffice"
    monkeypatch.setenv("PATH", str(tmp_path))  # no soffice, nor ssconvert, on it
    assert fastest_engine(at_124m, {}) == "ironcalc"
    with pytest.raises(XlgptError, match="LibreOffice is not installed.*too large for IronCalc"):
        fastest_engine(huge, {"max_cells": 300_000})


TYPED = ["Shall I compare thee", "I'm y'all 'S ''s\r\n\t🙂 é 12", "  spaces   and\ttabs  ", "Thou art!"]


def test_typed_prompts_are_tokenized_and_computed(tmp_path):
    """A Prompt-cell book, loaded once: each prompt typed into its Prompt cell is tokenized by the sheet as GPT-2's
    tokenizer does (contractions, whitespace runs, an emoji's four bytes) and computed as the reference does."""
    book = built(tmp_path, "--prompt", TYPED[1], "--capacity", "32,64,16")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(t.replace("\r\n", " ") + "\n" for t in TYPED), encoding="utf-8")
    run = xlgpt("eval", book, "--engine", "ironcalc", "--prompts", prompts, "--json")
    assert run.returncode == 0, (run.stdout, run.stderr)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["prompt"] for r in results] == [t.replace("\r\n", " ") for t in TYPED]
    for r in results:
        assert r["engine"] == "ironcalc" and r["match"], r
        assert r["tokens"] == r["reference_tokens"] and len(r["tokens"]) > 3, r  # the sheet's, tokenizers'
        assert {C.PROBABILITIES, C.LENS_TOP_TOKENS, C.ATTRIBUTION_TABLE, *C.HEAD_SCORES} <= set(r["checks"])
