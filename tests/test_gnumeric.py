"""Gnumeric, the third engine, on every fixture; and the package itself checked by an OOXML validator."""

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import FIXTURE_NAMES, FIXTURES, assert_valid_ooxml, expected, tokens_arg, xlgpt


def build(name, directory):
    tokens, _ = expected(name)
    path = Path(directory) / f"{name}.xlsx"
    xlgpt("build", "--weights", FIXTURES / name, "--tokens", tokens_arg(tokens), "--out", path, check=0)
    return path


@pytest.mark.engines
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_gnumeric_matches_the_reference(name, tmp_path):
    tokens, hf_logits = expected(name)
    run = xlgpt("eval", build(name, tmp_path), "--engine", "gnumeric", "--json", check=0)
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert result["engine"] == "gnumeric" and result["tokens"] == tokens
    assert result["match"] is True and result["max_abs_logit_diff"] <= 1e-6
    assert result["token_id"] == int(hf_logits[-1].argmax())


@pytest.mark.engines
@pytest.mark.parametrize("prompt", ["a", "hi", "Shall I"])
def test_gnumeric_tokenizes_prompts_of_one_token_and_more(prompt, tmp_path):
    """A one-token prompt makes SheetTokenIds one cell, where Gnumeric's INDEX gives #REF! (Excel's reads it)."""
    path = tmp_path / "book.xlsx"
    xlgpt("build", "--prompt", prompt, "--capacity", "fit", "--out", path, check=0)
    run = xlgpt("eval", path, "--engine", "gnumeric", "--json", check=0)
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert result["match"] and result["token_id"] == result["reference_token_id"], result


@pytest.mark.engines
def test_all_engines(tmp_path):
    run = xlgpt("eval", build("single_token", tmp_path), "--engine", "all", "--json", check=0)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["engine"] for r in results] == ["formulas", "libreoffice", "gnumeric", "ironcalc"]
    assert all(r["match"] for r in results)


@pytest.mark.engines
def test_missing_gnumeric_is_one_clean_line(tmp_path):
    book = build("tiny", tmp_path)
    # the subprocess runs sys.executable by its full path; PATH then holds no ssconvert
    run = xlgpt("eval", book, "--engine", "gnumeric", env={"PATH": os.path.dirname(sys.executable)}, check=2)
    assert run.stderr.strip().splitlines() == [
        "xlgpt: error: Gnumeric is not installed (no 'ssconvert' on PATH); install it, e.g. "
        "apt-get install --no-install-recommends gnumeric, or use another --engine"
    ]


@pytest.mark.engines
def test_ooxml_validator_finds_no_errors(tmp_path):
    assert_valid_ooxml(build("three_heads", tmp_path))


@pytest.mark.engines
def test_prompt_cell_book(tmp_path):
    book = tmp_path / "typed.xlsx"
    xlgpt("build", "--capacity", "fit", "--out", book, check=0)
    run = xlgpt("eval", book, "--engine", "gnumeric", "--json")
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert result["match"] is True
