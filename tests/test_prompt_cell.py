"""A model workbook that tokenizes its own Prompt cell: typed prompts, padding, clear messages."""

import hashlib
import json

import numpy as np
import openpyxl
import pytest

from helpers import assert_clean_error, xlgpt
from xlgpt.engines.ironcalc import IronCalcSheet
from xlgpt.engines.libreoffice import soffice_csv
from xlgpt.model.checkpoint import Config, random_tensors, save
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book
from xlgpt.sheet.styles import INPUT
from xlgpt.sheet.text import prompt_value
from xlgpt.sheet.writer import copy_with_cell

# Every test here needs the default prompt-cell book (a slow build) and most recalculate it with LibreOffice.
pytestmark = pytest.mark.engines

DEFAULT = "O Romeo, Romeo, wherefore art"


def evaluate(book, *args):
    return [json.loads(line) for line in xlgpt("eval", book, "--json", *args, check=0).stdout.splitlines()]


def reference(prompt, weights=()):
    """The NumPy reference's prediction and `tokenizers`' ids, through `predict` (no spreadsheet)."""
    out = json.loads(xlgpt("predict", *weights, "--prompt", prompt, "--json", check=0).stdout)
    return out["tokens"], out["token_id"]


@pytest.fixture(scope="module")
def typed_book(tmp_path_factory):
    """The default build: the bundled model, its default prompt in a Prompt cell, human-sized capacity."""
    out = tmp_path_factory.mktemp("typed") / "book.xlsx"
    run = xlgpt("build", "--out", out, check=0)
    assert "prompt cell" in run.stdout and "up to 32 tokens" in run.stdout
    return out


def test_layout(typed_book):
    wb = openpyxl.load_workbook(typed_book, read_only=True)
    assert wb.sheetnames[:7] == ["Guide", "Prompt", "Chars", "Bytes", "BPE", "Tokens", "Embeddings"]
    assert wb.sheetnames[-3:] == ["Merges", "Byte symbols", "Unicode classes"]
    assert "Token texts" not in wb.sheetnames  # the model's Vocabulary serves the tokenizer too
    names = {n: d.attr_text for n, d in wb.defined_names.items()}
    assert names["Prompt"] == "Prompt!$C$3" and wb["Prompt"]["C3"].value == DEFAULT
    assert names["SheetTokenIds"] == "Prompt!$C$7:$AH$7"  # one cell per model position
    assert names["LogitsTokenIds"].startswith("Output!") and names["LogitsInPrompt"].startswith("Output!")
    tokens = wb["Tokens"]
    assert tokens["C3"].value.startswith("=IF($C$5=1,INDEX(SheetTokenIds,1,1)")  # 1 = the prompt's
    assert (
        "TokenizerStatus"
        in wb[names["PredictedToken"].split("!")[0]][names["PredictedToken"].split("!")[1].replace("$", "")].value
    )
    wb.close()


def test_default_prompt_with_libreoffice(typed_book):
    ids, predicted = reference(DEFAULT)
    [r] = evaluate(typed_book, "--engine", "libreoffice")
    assert r["match"] and r["tokens"] == r["reference_tokens"] == ids and r["token_id"] == predicted
    assert r["prompt"] == DEFAULT and r["max_abs_logit_diff"] < 1e-9


def test_padding_positions_compute_no_product(typed_book):
    """A typed book multiplies only at the prompt's positions (Ctx.product): at a padding position the
    unembedding, the lens's and the SAE encoder's products are zeros (the model run on the padding id would
    give other logits), so the logits there are 0, the lens's top probability 1/vocabulary, no feature fires."""
    info = read_book(typed_book)
    model = IronCalcSheet(info)
    values = model.read([C.LOGITS_IN_PROMPT, C.LOGITS, C.LENS_TOP_PROBABILITIES, C.FEATURE_ACTIVATIONS])
    used = values[C.LOGITS_IN_PROMPT][0] == 1
    assert used.sum() == len(reference(DEFAULT)[0]) and not used.all()
    logits, probs, features = values[C.LOGITS], values[C.LENS_TOP_PROBABILITIES], values[C.FEATURE_ACTIVATIONS]
    assert np.all(logits[:, ~used] == 0) and np.all(np.abs(logits[:, used]).max(axis=0) > 1)
    np.testing.assert_allclose(probs[:, ~used], 1 / logits.shape[0], rtol=1e-12)
    assert np.all(features[:, ~used] == 0) and np.all(features[:, used].max(axis=0) > 0)


@pytest.mark.parametrize("prompt", ["Shall I compare thee to a summer's", "To be, or not to be:\n"])
def test_typing_another_prompt(typed_book, prompt):
    """eval --prompt types into a copy; the sheet's tokens and prediction follow, the book is untouched."""
    before = hashlib.sha256(typed_book.read_bytes()).hexdigest()
    ids, predicted = reference(prompt)
    [r] = evaluate(typed_book, "--engine", "libreoffice", "--prompt", prompt)
    assert r["match"] and r["tokens"] == ids and r["token_id"] == predicted and r["prompt"] == prompt
    assert hashlib.sha256(typed_book.read_bytes()).hexdigest() == before


def test_fit_capacity_with_both_engines(tmp_path):
    """The smallest prompt-cell book (tokenizer sized to the prompt) is within the formulas engine's reach."""
    out = tmp_path / "fit.xlsx"
    xlgpt("build", "--capacity", "fit", "--prompt", "O Romeo", "--weights", "shakespeare", "--out", out, check=0)
    ids, predicted = reference("O Romeo")
    results = evaluate(out, "--engine", "both")
    assert [r["engine"] for r in results] == ["formulas", "libreoffice"]
    for r in results:
        assert r["match"] and r["tokens"] == ids and r["token_id"] == predicted


def test_formulas_refuses_a_tokenizer_beyond_it(tmp_path):
    """The default book's tokenizer (~300,000 formula cells) is beyond the formulas engine: refused before any slow
    work, pointing to IronCalc and LibreOffice, or a smaller capacity."""
    book = tmp_path / "default.xlsx"
    xlgpt("build", "--out", book, check=0)
    assert_clean_error(xlgpt("eval", book, "--engine", "formulas"), "--engine ironcalc or libreoffice", "--capacity")


def prediction_after_typing(book, text, tmp_path):
    """Type `text` into a copy without eval's checks, recalculate with LibreOffice, read the Tokens tab."""
    info = read_book(book)
    copy = tmp_path / "typed.xlsx"
    ref = info.names["Prompt"]
    copy_with_cell(book, copy, info.sheets.index(ref.sheet) + 1, ref.top, ref.left, prompt_value(text), INPUT)
    cell = info.names["PredictedToken"]
    grid = soffice_csv([copy], info.sheets.index(cell.sheet) + 1)[0]
    return grid[cell.top - 1][cell.left - 1], grid[cell.top - 1][cell.left]


def test_prompts_that_do_not_fit_say_so(tmp_path):
    """More tokens than positions, or more text than the tokenizer holds: a message, not a wrong token."""
    book = tmp_path / "small.xlsx"
    xlgpt("build", "--prompt", "O Romeo", "--positions", 12, "--capacity", "40,40,10", "--out", book, check=0)
    ids, predicted = reference("O Romeo, Romeo")
    assert len(ids) <= 12
    assert prediction_after_typing(book, "O Romeo, Romeo", tmp_path)[0] == str(predicted)
    value, text = prediction_after_typing(book, "O Romeo, Romeo, wherefore", tmp_path)  # > 12 tokens
    assert value == text == "Too many tokens: 15; this sheet holds at most 12."
    value, text = prediction_after_typing(book, "x" * 41, tmp_path)
    assert value == text == "Too long: 41 characters; this sheet holds at most 40."


def test_eval_prompt_errors(typed_book, tmp_path):
    fixed = tmp_path / "fixed.xlsx"
    xlgpt("build", "--tokens", "1,2,3", "--out", fixed, check=0)
    assert_clean_error(xlgpt("eval", fixed, "--prompt", "O Romeo"), "built from a prompt")
    assert_clean_error(xlgpt("eval", typed_book, "--prompt", ""), "empty")
    assert_clean_error(xlgpt("eval", typed_book, "--prompt", "O Romeo, " * 10), "tokens (positions)")
    assert_clean_error(
        xlgpt("build", "--prompt", "O Romeo, Romeo", "--positions", 3, "--out", tmp_path / "x.xlsx"), "--positions 3"
    )
    assert_clean_error(xlgpt("build", "--capacity", "12,x", "--out", tmp_path / "x.xlsx"), "--capacity")
    assert not (tmp_path / "x.xlsx").exists()


def test_gpt2_tokenizer_in_the_model_book(tmp_path):
    """A model with GPT-2's vocabulary tokenizes in the sheet to the published ids."""
    ckpt = tmp_path / "ck"
    save(ckpt, Config(1, 8, 2, 50257, 8), random_tensors(Config(1, 8, 2, 50257, 8), 3))
    book = tmp_path / "g.xlsx"
    xlgpt(
        "build",
        "--weights",
        ckpt,
        "--prompt",
        "Mike is quick. He moves",
        "--capacity",
        "64,64,20",
        "--out",
        book,
        check=0,
    )
    # both prompts with the book loaded once; the token texts eval reports come from the tokenizer
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Mike is quick. He moves\nfunology reinjury\n", encoding="utf-8")
    run = xlgpt("eval", book, "--engine", "ironcalc", "--prompts", prompts, "--json", check=0)
    first, r = [json.loads(line) for line in run.stdout.splitlines()]
    assert first["match"] and first["tokens"] == [16073, 318, 2068, 13, 679, 6100]
    assert first["token_text"] == first["reference_token_text"]
    assert r["match"] and r["tokens"] == [12543, 1435, 6865, 21871]
    assert r["token_id"] == reference("funology reinjury", ("--weights", ckpt))[1]
