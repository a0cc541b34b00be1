"""A learner's first hour (issue 29): every "thing to try" on the Guide changes something, and eval shows it;
positions count from 0; text fits its tab. Books are built by the CLI from the bundled model and its default
prompt; numbers are what LibreOffice computed (eval) or the cached values the book opens with."""

import json
import re

import openpyxl
import pytest

from helpers import xlgpt
from xlgpt.compile.guide import LINE
from xlgpt.compile.ops.interventions import FIT
from xlgpt.sheet import contract as C


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The default book (bundled model, default prompt in a Prompt cell), its tokenizer sized to the prompt."""
    path = tmp_path_factory.mktemp("first_hour") / "demo.xlsx"
    xlgpt("build", "--capacity", "fit", "--out", path, check=0)
    return path


@pytest.fixture(scope="module")
def shown(book):
    """The book as it opens: its cached values (loaded once: ~0.6M cells)."""
    return openpyxl.load_workbook(book, data_only=True)


@pytest.fixture(scope="module")
def written(book):
    """The book's formulas, styles and links (loaded once)."""
    return openpyxl.load_workbook(book)


def evaluate(book, *sets):
    run = xlgpt("eval", book, "--engine", "libreoffice", "--json", *[a for s in sets for a in ("--set", s)], check=0)
    return [json.loads(line) for line in run.stdout.splitlines()]


def cells(ws):
    return [c for row in ws.iter_rows() for c in row if c.value is not None]


def column_a(ws):
    return [c.value for c in ws["A"] if isinstance(c.value, str)]


@pytest.mark.engines
def test_the_default_steering_vector_changes_the_prediction(book):
    plain, steered = evaluate(book)[0], evaluate(book, "SteeringCoefficient=1")[0]
    assert plain["match"] and steered["match"]
    assert (plain["token_text"], steered["token_text"]) == (" thou", " is")
    wb = openpyxl.load_workbook(book, data_only=True)
    sheet, where = next(iter(wb.defined_names[C.STEERING_COEFFICIENT].destinations))
    assert wb[sheet][where.replace("$", "")].value == 0  # off until the learner puts a number in
    guide = " ".join(column_a(wb["Guide"]))
    assert "Put 1 (or 4) in SteeringCoefficient" in guide and "is zeros" not in guide


def test_a_book_without_texts_to_steer_by_says_what_to_build_first(small_ckpt, tmp_path):
    path = tmp_path / "book.xlsx"
    xlgpt("build", "--weights", small_ckpt, "--tokens", "1,2,3", "--out", path, check=0)
    guide = " ".join(column_a(openpyxl.load_workbook(path, data_only=True)["Guide"]))
    assert "SteeringVector is zeros in this book: build one first" in guide
    assert "Put 1 (or 4)" not in guide


@pytest.mark.engines
def test_eval_shows_what_an_edit_changed(book):
    before = evaluate(book)[0]
    run = xlgpt(
        "eval",
        book,
        "--engine",
        "libreoffice",
        "--set",
        "AttributionToken=198",
        "--set",
        "Temperature=0.8",
        "--set",
        "Seed=2",
        check=0,
    )
    after = evaluate(book, "AttributionToken=198", "Temperature=0.8", "Seed=2")[0]
    # the draw, no longer the most probable token; the attribution to the new target; the same top-5 and lens
    assert before["sampled_token"]["text"] == " thou" and after["sampled_token"]["text"] == " of"
    assert before["attribution"]["target"]["token_id"] == 352 and after["attribution"]["target"]["token_id"] == 198
    largest = after["attribution"]["largest"]
    assert len(largest) == 3 and abs(largest[0]["contribution"]) >= abs(largest[-1]["contribution"]) > 0
    assert [t["text"] for t in after["top_k"]][:2] == [" thou", "s"]
    assert after["top_k"][0]["probability"] == pytest.approx(0.406, abs=1e-3)
    assert after["lens_position"] == 17 and after["lens"][-1]["token_id"] == after["token_id"]
    assert [s["stream"] for s in after["lens"]] == ["after the embeddings", "after layer 0", "after layer 1"]
    out = run.stdout
    assert "sampled token: 293 ' of'" in out, out
    assert re.search(r"attribution to 198 '\\n' \(logit -?\d+\.\d{3}\), largest terms: layer \d", out), out
    assert "top-5: 352 ' thou' 40.6%" in out and "logit lens at position 17:" in out


@pytest.mark.engines  # slow: builds the bundled model's book (the fast loop's bad-input tests use tiny ones)
def test_a_temperature_below_zero_is_refused_with_the_cells_message(book):
    run = xlgpt("eval", book, "--engine", "libreoffice", "--set", "Temperature=-1")
    assert run.returncode == 2 and "Temperature must be a number 0 or more" in run.stderr, run.stderr


@pytest.mark.engines
def test_a_training_books_eval_says_the_loss_first(tmp_path):
    path = tmp_path / "train.xlsx"
    xlgpt("build", "--train", "--prompt", "Shall I compare thee", "--out", path, check=0)
    run = xlgpt("eval", path, "--engine", "libreoffice", check=0)
    line = next(line for line in run.stdout.splitlines() if line.strip().startswith("libreoffice:"))
    loss = float(re.match(r"\s*libreoffice: loss (\d+\.\d{4}), next token", line).group(1))
    [result] = [
        json.loads(x) for x in xlgpt("eval", path, "--engine", "libreoffice", "--json", check=0).stdout.splitlines()
    ]
    assert loss == pytest.approx(result["loss"], abs=1e-4) and 1 < loss < 10


def test_features_search_says_what_it_searched_and_heads_its_columns():
    found = xlgpt("features", "--search", "thou", check=0).stdout.splitlines()
    assert "searching the features' labels and top tokens (any case) for 'thou': 2 of 192 features match" in found
    header = found.index(next(line for line in found if line.lstrip().startswith("index")))
    assert "fires on" in found[header] and "label" in found[header]
    assert [line.split()[0] for line in found[header + 1 :]] == ["102", "172"]
    none = xlgpt("features", "--search", "love", check=0).stdout
    assert "for 'love': no feature matches, of 192 (a label names the tokens a feature fires on most" in none
    assert "index" not in none


@pytest.mark.engines  # slow: openpyxl loads the whole book's cached values (~5 s)
def test_guide_and_interventions_text_fits_their_columns(shown):
    wb = shown
    guide = [text for text in column_a(wb["Guide"])]
    assert max(map(len, guide)) <= LINE and len(guide) > 30
    notes = [t for t in column_a(wb["Interventions"]) if not t.startswith("SteeringVector: ")]
    assert max(map(len, notes)) <= FIT
    steering = next(t for t in column_a(wb["Interventions"]) if t.startswith("SteeringVector: "))
    assert "ActAdd" in steering and len(steering) <= 80  # one cell: eval takes any text after its prefix
    # every label of the SAE's top features in full: the columns are as wide as the longest
    features = wb["Features"]
    labels = [c.value for c in cells(features) if isinstance(c.value, str) and re.match(r"\d+: ", c.value)]
    width = features.column_dimensions["C"].width
    assert labels and max(map(len, labels)) < width
    assert wb["BPE"].column_dimensions["A"].width > max(len(t) for t in column_a(wb["BPE"]) if ": none)" in t)


@pytest.mark.engines  # slow: openpyxl loads the whole book with its styles (~9 s)
def test_the_guides_contents_tell_every_block_apart(written):
    guide = written["Guide"]
    links = [c.value.strip() for c in cells(guide) if c.hyperlink and c.hyperlink.location.startswith("'Layer 0'")]
    assert len(links) == len(set(links)), [t for t in links if links.count(t) > 1]
    for step in ("scores", "masked scores", "exp", "attention weights"):
        assert f"{step}, head 0: rows are key positions, columns query positions" in links


def test_positions_count_from_0_and_the_rest_says_so(shown):
    wb = shown
    prompt = wb["Prompt"]
    row = next(r for r in prompt.iter_rows() if r[0].value == "token position")
    ids = next(r for r in prompt.iter_rows() if r[0].value == "token id")
    assert [c.value for c in row[2:5]] == [0, 1, 2]
    tokens = wb["Tokens"]
    positions = next(r for r in tokens.iter_rows() if r[0].value == "position")
    token_ids = next(r for r in tokens.iter_rows() if r[0].value == "token id")
    assert [c.value for c in positions[2:20]] == list(range(18))
    assert [c.value for c in ids[2:20]] == [c.value for c in token_ids[2:20]]  # position t under position t
    last = next(r for r in tokens.iter_rows() if r[0].value == "LastPosition")
    assert last[2].value == 18 and "position LastPosition − 1" in last[3].value
    assert wb["Chars"]["A2"].value.startswith("character number (from 1")
    assert any("byte slot (from 1)" == c.value for c in cells(wb["BPE"]))


@pytest.mark.engines  # slow: openpyxl loads the whole book with its styles (~9 s)
def test_padding_keys_grey_and_attribution_signs_in_colour(written):
    wb = written
    rules = [rule.formula[0] for r in wb["Layer 0"].conditional_formatting for rule in r.rules if rule.formula]
    # a rule on each head's scores, masked scores, exponentials and weights
    assert sum("INDEX($C$5:" in f and "=0" in f for f in rules) == 4 * 4
    sheet, where = next(iter(wb.defined_names[C.ATTRIBUTION_TABLE].destinations))
    row = openpyxl.utils.cell.range_boundaries(where)[1]  # the format is the table's rows'
    assert wb[sheet].row_dimensions[row].number_format == "[Blue]+0.000;[Red]-0.000;0.000"
    faded = [rule.formula[0] for r in wb["BPE"].conditional_formatting for rule in r.rules if rule.formula]
    none = int(re.search(r"\((\d+): none\)", " ".join(column_a(wb["BPE"]))).group(1))
    assert any(f.endswith("=999") for f in faded) and any(f.endswith(f"={none}") for f in faded)
