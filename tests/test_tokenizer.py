"""Tokenizers through the real CLI: published GPT-2 ids, prompts in the workbook, bad prompts."""

import json

import openpyxl
import pytest

from helpers import assert_clean_error, xlgpt
from xlgpt.model.checkpoint import Config, random_tensors, save
from xlgpt.tokenizer.hf import GPT2_TOKENIZER


@pytest.mark.parametrize(
    "text, ids, strings",
    [
        ("Mike is quick. He moves", [16073, 318, 2068, 13, 679, 6100], ["Mike", " is", " quick", ".", " He", " moves"]),
        ("Hello, world!", [15496, 11, 995, 0], ["Hello", ",", " world", "!"]),
        ("funology reinjury", [12543, 1435, 6865, 21871], ["fun", "ology", " rein", "jury"]),
    ],
)
def test_gpt2_known_ids(text, ids, strings):
    """Published GPT-2 ids, and each token's text as `tokenizers` decodes it."""
    run = xlgpt("tokenize", "--tokenizer", "gpt2", "--json", text, check=0)
    assert json.loads(run.stdout) == [{"text": text, "tokens": ids, "strings": strings}]
    assert "".join(strings) == text


@pytest.fixture(scope="module")
def gpt2_vocab_ckpt(tmp_path_factory):
    """A random model with GPT-2's vocabulary size, so it uses GPT-2's tokenizer."""
    path = tmp_path_factory.mktemp("g") / "ck"
    cfg = Config(1, 8, 2, 50257, 8)
    save(path, cfg, random_tensors(cfg, 3))
    return path


@pytest.mark.engines
def test_prompt_build_shows_token_texts(gpt2_vocab_ckpt, tmp_path):
    out = tmp_path / "p.xlsx"
    run = xlgpt(
        "build",
        "--weights",
        gpt2_vocab_ckpt,
        "--prompt",
        "Mike is quick. He moves",
        "--no-prompt-cell",
        "--out",
        out,
        check=0,
    )
    assert "6 tokens" in run.stdout
    wb = openpyxl.load_workbook(out)
    ws = wb["Tokens"]
    assert [ws.cell(3, 3 + t).value for t in range(6)] == [16073, 318, 2068, 13, 679, 6100]
    vocab = wb["Embeddings weights"]
    top = wb.defined_names["Vocabulary"].attr_text
    assert top == "'Embeddings weights'!$A$5:$A$50261"
    assert (
        vocab["A5"].value == "!" and vocab.cell(5 + 16073, 1).value == "Mike" and vocab.cell(5 + 318, 1).value == "␣is"
    )


def test_predict_with_prompt_matches_tokens(gpt2_vocab_ckpt):
    a = json.loads(
        xlgpt("predict", "--weights", gpt2_vocab_ckpt, "--prompt", "Hello, world!", "--json", check=0).stdout
    )
    b = json.loads(
        xlgpt("predict", "--weights", gpt2_vocab_ckpt, "--tokens", "15496,11,995,0", "--json", check=0).stdout
    )
    assert a["tokens"] == [15496, 11, 995, 0] and a["top"][0]["token_id"] == b["top"][0]["token_id"]


def test_prompt_errors(gpt2_vocab_ckpt, small_ckpt, tmp_path):
    out = tmp_path / "x.xlsx"
    assert_clean_error(xlgpt("build", "--weights", gpt2_vocab_ckpt, "--prompt", "", "--out", out), "empty")
    assert_clean_error(
        xlgpt(
            "build",
            "--weights",
            gpt2_vocab_ckpt,
            "--prompt",
            "one two three four five six seven eight nine",
            "--out",
            out,
        ),
        "more than the model's context of 8",
    )
    assert_clean_error(
        xlgpt("build", "--weights", gpt2_vocab_ckpt, "--prompt", "a", "--tokens", "1", "--out", out),
        "either --tokens or --prompt",
    )
    assert_clean_error(xlgpt("build", "--weights", small_ckpt, "--prompt", "hi", "--out", out), "no tokenizer")
    assert not out.exists()


def test_text_the_tokenizer_cannot_encode(tmp_path):
    """A BPE vocabulary without some bytes would drop characters silently; xlgpt refuses instead."""
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    assert json.loads(xlgpt("tokenize", "--tokenizer", tmp_path, "--json", "abba", check=0).stdout)[0]["tokens"] == [
        0,
        1,
        1,
        0,
    ]
    assert_clean_error(xlgpt("tokenize", "--tokenizer", tmp_path, "abc"), "cannot encode")


def test_vendored_files_are_gpt2s():
    assert (GPT2_TOKENIZER / "encoder.json").stat().st_size == 1042301
    assert (GPT2_TOKENIZER / "vocab.bpe").stat().st_size == 456318


@pytest.mark.engines
def test_tokenize_with_the_sheet_cli():
    """`tokenize --engine` builds tokenizer workbooks and reports the ids the sheet computed."""
    texts = ["Mike is quick. He moves", "funology reinjury", "don't\tstop  \n 12 🙂"]
    run = xlgpt("tokenize", "--tokenizer", "gpt2", "--engine", "libreoffice", "--json", *texts, check=0)
    results = json.loads(run.stdout)
    assert [r["text"] for r in results] == texts
    assert results[0]["tokens"] == [16073, 318, 2068, 13, 679, 6100]
    assert results[1]["tokens"] == [12543, 1435, 6865, 21871]
    from xlgpt.tokenizer.hf import load as load_tokenizer

    assert results[2]["tokens"] == results[2]["reference"] == load_tokenizer("gpt2").hf.encode(texts[2]).ids
    assert all(r["match"] for r in results)
