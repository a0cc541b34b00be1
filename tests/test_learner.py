"""The parts of the book a learner and a tinkerer use: guide, heatmaps, named ranges, instruments, sampling,
features. Structure is read back with openpyxl; numbers are checked by eval against the reference."""

import json

import numpy as np
import openpyxl
import pytest

from helpers import BUNDLED, FIXTURES, assert_clean_error, expected, xlgpt
from xlgpt.model import reference
from xlgpt.model.checkpoint import load
from xlgpt.sheet import contract as C
from xlgpt.tokenizer.hf import for_checkpoint


@pytest.fixture(scope="module")
def book(three_heads_book):
    return three_heads_book


def ranges(ws):
    return [str(r.sqref) for r in ws.conditional_formatting]


def test_guide_comes_first_and_links_every_tab(book):
    wb = openpyxl.load_workbook(book)
    assert wb.sheetnames[0] == "Guide"
    guide = wb["Guide"]
    locations = [c.hyperlink.location for row in guide.iter_rows() for c in row if c.hyperlink]
    tabs = [name for name in wb.sheetnames if name != "Guide"]
    for name in tabs:  # every tab, by its top-left corner
        assert any(loc in (f"{name}!$A$1", f"'{name}'!$A$1") for loc in locations), name
    # and every block of the computation tabs: as many links as titles on Layer 0, each to an existing title
    titles = [c for c in wb["Layer 0"]["A"] if c.font.b and isinstance(c.value, str)]
    to_layer0 = [loc for loc in locations if loc.startswith("'Layer 0'!") and loc != "'Layer 0'!$A$1"]
    assert len(to_layer0) >= 15
    cells = {c.coordinate for c in titles}
    assert {loc.split("!")[1].replace("$", "") for loc in to_layer0} <= cells
    text = " ".join(str(c.value) for row in guide.iter_rows() for c in row if c.value)
    assert "recalculate" in text and "Ctrl+Shift+F9" in text and "Ctrl+Alt+F9" in text


def test_heatmaps_on_every_head_and_the_tables(book):
    wb = openpyxl.load_workbook(book)
    cfg = load(FIXTURES / "three_heads").config
    for layer in range(cfg.n_layer):
        ws = wb[f"Layer {layer}"]
        scales = [r for r in ws.conditional_formatting for rule in r.rules if rule.type == "colorScale"]
        # scores and probabilities of every head
        assert len(scales) == 2 * cfg.n_head
    assert any(rule.type == "colorScale" for r in wb["Logit lens"].conditional_formatting for rule in r.rules)
    assert any(rule.type == "colorScale" for r in wb["Output"].conditional_formatting for rule in r.rules)
    assert any(rule.type == "colorScale" for r in wb["Attribution"].conditional_formatting for rule in r.rules)


def test_named_ranges_of_the_instruments(book):
    wb = openpyxl.load_workbook(book)
    cfg = load(FIXTURES / "three_heads").config
    tokens, _ = expected("three_heads")
    shape = lambda name: openpyxl.utils.cell.range_boundaries(wb.defined_names[name].attr_text.split("!")[1])
    size = lambda name: (shape(name)[3] - shape(name)[1] + 1, shape(name)[2] - shape(name)[0] + 1)
    assert size(C.PROBABILITIES) == size(C.LOGITS) == (cfg.vocab_size, len(tokens))
    assert size(C.LENS_TOP_TOKENS) == size(C.LENS_TOP_PROBABILITIES) == (cfg.n_layer + 1, len(tokens))
    assert size(C.TOP_K_TOKENS) == (5, 1)
    assert size(C.HEAD_SWITCHES) == (cfg.n_layer, cfg.n_head) and size(C.MLP_SWITCHES) == (cfg.n_layer, 1)
    assert size(C.STEERING_VECTOR) == (cfg.n_embd, 1)
    assert size(C.ATTRIBUTION_TABLE) == (cfg.n_layer, cfg.n_head + 2)
    for name in (
        C.TEMPERATURE,
        C.TOP_K,
        C.SEED,
        C.SAMPLE_STEP,
        C.SAMPLED_TOKEN,
        C.STEERING_LAYER,
        C.STEERING_COEFFICIENT,
        C.ATTRIBUTION_TOKEN,
        C.LAST_POSITION,
    ):
        assert size(name) == (1, 1), name
    # the switches default to 1: the book computes the unswitched model
    sheet, cells = wb.defined_names[C.HEAD_SWITCHES].attr_text.split("!")
    assert {c.value for row in wb[sheet][cells.replace("$", "")] for c in row} == {1}


def test_layer_formulas_show_the_interventions(book):
    wb = openpyxl.load_workbook(book)
    formulas = [
        str(c.value.text if hasattr(c.value, "text") else c.value)
        for row in wb["Layer 1"].iter_rows()
        for c in row
        if c.value is not None
    ]
    switch = wb.defined_names[C.HEAD_SWITCHES].attr_text.split("!")[0]
    assert any("MMULT(" in f and f"{switch}!$" in f for f in formulas)  # a head's values times its switch
    assert any("IF(Interventions!" in f and "=1," in f for f in formulas)  # steering when SteeringLayer = 1


@pytest.mark.engines
def test_every_table_checked_with_every_engine(book):
    run = xlgpt("eval", book, "--engine", "all", "--json")
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["engine"] for r in results] == ["formulas", "libreoffice", "gnumeric", "ironcalc"], run.stderr
    for r in results:
        assert set(r["checks"]) >= {
            C.LOGITS,
            C.PROBABILITIES,
            C.TOP_K_TOKENS,
            C.TOP_K_PROBABILITIES,
            C.LENS_TOP_TOKENS,
            C.LENS_TOP_PROBABILITIES,
            C.SAMPLED_TOKEN,
            C.ATTRIBUTION_TABLE,
            C.ATTRIBUTION_OTHER,
            C.ATTRIBUTION_LOGIT,
        }
        assert r["match"] and max(r["checks"].values()) < 1e-9, r["checks"]
    assert run.returncode == 0


@pytest.mark.engines
def test_edits_sampling_and_attribution_target(book):
    """The book with switches, steering, sampling and another attribution target, against the reference
    run with the same edits (eval --set)."""
    sets = [
        "HeadSwitches[0,1]=0",
        "MlpSwitches[1]=0.5",
        "SteeringLayer=1",
        "SteeringCoefficient=3",
        "SteeringVector[2]=0.25",
        "Temperature=0.8",
        "TopK=4",
        "Seed=12345",
        "SampleStep=2",
        "AttributionToken=3",
    ]
    run = xlgpt("eval", book, "--engine", "libreoffice", "--json", *[a for s in sets for a in ("--set", s)])
    r = json.loads(run.stdout)
    assert run.returncode == 0 and r["match"], (run.stderr, r.get("checks"))
    # the edits changed the numbers: the unedited model predicts otherwise or with other logits
    ckpt = load(FIXTURES / "three_heads")
    tokens, _ = expected("three_heads")
    edits = reference.Edits.none(ckpt.config)
    edits.head_switches[0, 1], edits.mlp_switches[1] = 0, 0.5
    edits.steering_layer, edits.steering_coefficient, edits.steering_vector[2] = 1, 3, 0.25
    assert np.abs(reference.logits(ckpt, tokens, edits) - reference.logits(ckpt, tokens)).max() > 1e-3


def test_bad_edits_are_one_clean_line(book):
    for bad, words in [
        ("Nope=1", "not a cell this workbook lets you set"),
        ("HeadSwitches[9,0]=0", "give an index inside it"),
        ("SteeringCoefficient=abc", "is not a number"),
        ("HeadSwitches 0", "expected NAME=VALUE"),
    ]:
        assert_clean_error(xlgpt("eval", book, "--set", bad), words)


@pytest.mark.engines
def test_bundled_demonstrations(tmp_path):
    """The README's demonstrations: ablating head 2 of layer 0, ActAdd steering and an SAE feature each
    change the bundled model's next token after the default prompt; the book agrees with the reference."""
    ckpt = load(BUNDLED)
    tok = for_checkpoint(ckpt)
    ids = tok.encode("O Romeo, Romeo, wherefore art")
    edits = reference.Edits.none(ckpt.config)
    edits.head_switches[0, 2] = 0
    assert tok.token_text(int(reference.logits(ckpt, ids)[-1].argmax())) == " thou"
    assert tok.token_text(int(reference.logits(ckpt, ids, edits)[-1].argmax())) == "y"
    book = tmp_path / "steer.xlsx"
    xlgpt("build", "--steer-from", " thee", "--steer-to", " you", "--steer-layer", 0, "--out", book, check=0)
    r = json.loads(xlgpt("eval", book, "--engine", "libreoffice", "--json").stdout)
    assert r["match"] and r["token_text"] == " is"
    r = json.loads(
        xlgpt(
            "eval",
            book,
            "--engine",
            "libreoffice",
            "--json",
            "--set",
            "SteeringCoefficient=0",
            "--set",
            "HeadSwitches[0,2]=0",
        ).stdout
    )
    assert r["match"] and r["token_text"] == "y"
    feature = tmp_path / "feature.xlsx"
    xlgpt("build", "--steer-feature", 40, "--steer-coef", 2, "--out", feature, check=0)
    r = json.loads(xlgpt("eval", feature, "--engine", "gnumeric", "--json").stdout)
    assert r["match"] and r["token_text"] == " the" and C.FEATURE_ACTIVATIONS in r["checks"]
