"""Activation patching: a book built with --corrupted runs the clean prompt, the corrupted prompt and the
corrupted prompt with one activation from the clean run (the Patch cells), and shows each run's logit
difference; xlgpt patch sweeps every patch through the book and writes the heatmaps into a copy, which eval
checks against the reference's own patching."""

import json

import numpy as np
import pytest

from helpers import BUNDLED, assert_clean_error, xlgpt
from xlgpt.model import backward, reference
from xlgpt.model.checkpoint import as_written, load
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book
from xlgpt.sheet.writer import copy_with_cells
from xlgpt.tokenizer import hf

CLEAN, CORRUPTED, ANSWER, FOIL = "I know him, and I love", "I know her, and I love", " him", " her"
DIFFERS_AT = 2  # the only position where the two prompts' tokens differ


@pytest.fixture(scope="module")
def bundled():
    ckpt = as_written(load(BUNDLED))
    tok = hf.for_checkpoint(ckpt)
    return ckpt, [tok.encode(t) for t in (CLEAN, CORRUPTED)], [tok.encode(t)[0] for t in (ANSWER, FOIL)]


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp("patching") / "patching.xlsx"
    xlgpt(
        "build", "--prompt", CLEAN, "--corrupted", CORRUPTED, "--answer", ANSWER, "--foil", FOIL, "--out", out, check=0
    )
    return out


def test_the_references_patching_restores_exactly_what_it_should(bundled):
    """Before the prompts differ the two runs are the same (a patch there changes nothing: 0); the residual
    stream entering block 0 at the differing position is the whole difference (1)."""
    ckpt, (clean, corrupted), (answer, foil) = bundled
    assert [i for i, (a, b) in enumerate(zip(clean, corrupted)) if a != b] == [DIFFERS_AT]
    maps = reference.activation_patching(ckpt, clean, corrupted, answer, foil)
    assert set(maps) == {"resid_pre", "attn_out", "mlp_out", "head"}
    assert maps["head"].shape == (ckpt.config.n_layer, ckpt.config.n_head)
    for component in ("resid_pre", "attn_out", "mlp_out"):
        assert maps[component].shape == (ckpt.config.n_layer, len(clean))
        assert np.array_equal(maps[component][:, :DIFFERS_AT], np.zeros((ckpt.config.n_layer, DIFFERS_AT)))
    assert maps["resid_pre"][0, DIFFERS_AT] == pytest.approx(1, abs=1e-12)
    assert np.abs(maps["resid_pre"][0, DIFFERS_AT + 1 :]).max() < 1e-12  # the corrupted token's stream only


def test_attribution_patching_is_the_first_order_term_of_activation_patching(bundled):
    """The backward pass's attribution of a patch equals the slope of the exact patching (the reference's forward
    pass) when only a small step ε of the clean-minus-corrupted activation is put in."""
    ckpt, (clean, corrupted), (answer, foil) = bundled
    cfg = ckpt.config
    attribution = backward.attribution_patching(ckpt.tensors, cfg, clean, corrupted, answer, foil)
    clean_logits, clean_cache, corrupted_logits = reference.patching_runs(ckpt, clean, corrupted)
    _, corrupted_cache = reference.run(ckpt, corrupted)
    a, b = reference.activations(clean_cache), reference.activations(corrupted_cache)
    eps = 1e-6
    stepped = {c: [x + eps * (y - x) for x, y in zip(b[c], a[c])] for c in a}  # ε of the way to clean
    diff = lambda logits: reference.logit_diff(logits, answer, foil)
    for component, layer, k in [("resid_pre", 1, DIFFERS_AT), ("attn_out", 1, 6), ("mlp_out", 0, 3), ("head", 1, 3)]:
        where = (component, layer, 0, k) if component == "head" else (component, layer, k, 0)
        edits = reference.Edits.none(cfg)
        edits.patch, edits.clean = where, stepped
        slope = (diff(reference.logits(ckpt, corrupted, edits)) - diff(corrupted_logits)) / eps
        want = slope / (diff(clean_logits) - diff(corrupted_logits))
        assert attribution[component][layer, k] == pytest.approx(want, rel=1e-4, abs=1e-7), (component, layer, k)


@pytest.mark.parametrize(
    "code, layer, position, head",
    [
        (1, 0, DIFFERS_AT, 0),
        pytest.param(4, 1, 0, 3, marks=pytest.mark.engines),
        pytest.param(0, 0, 0, 0, marks=pytest.mark.engines),
        pytest.param(2, 1, 6, 0, marks=pytest.mark.engines),
        pytest.param(3, 0, 3, 0, marks=pytest.mark.engines),
    ],
)
def test_a_patching_book_matches_the_reference_with_every_patch_component(book, bundled, code, layer, position, head):
    """A PatchComponent (--set, IronCalc): the three runs' LogitDiff and PatchedMetric are the reference's."""
    ckpt, (clean, corrupted), (answer, foil) = bundled
    info = read_book(book)
    assert info.patching["corrupted"] == corrupted and info.tokens == clean
    assert [info.patching[n] for n in (C.ANSWER_TOKEN, C.FOIL_TOKEN)] == [answer, foil]
    clean_logits, cache, corrupted_logits = reference.patching_runs(ckpt, clean, corrupted)
    diff = lambda logits: reference.logit_diff(logits, answer, foil)
    sets = [f"{C.PATCH_COMPONENT}={code}", f"{C.PATCH_LAYER}={layer}", f"{C.PATCH_POSITION}={position}"]
    sets.append(f"{C.PATCH_HEAD}={head}")
    r = xlgpt("eval", book, "--engine", "ironcalc", "--json", *[a for s in sets for a in ("--set", s)], check=0)
    result = json.loads(r.stdout)
    assert result["match"] and result["checks"][C.PATCHED_METRIC] < 1e-9, result["checks"]
    where = (C.PATCH_COMPONENTS[code], layer, position, head) if code else None
    patched = reference.patched_logits(ckpt, corrupted, cache, where) if where else corrupted_logits
    metric = reference.patched_metric(diff(patched), diff(clean_logits), diff(corrupted_logits))
    if (code, position) == (1, DIFFERS_AT):  # the corrupted token's own stream: the whole difference
        assert metric == pytest.approx(1, abs=1e-12)


@pytest.mark.engines
def test_xlgpt_patch_writes_heatmaps_that_eval_checks(book, bundled, tmp_path):
    """The sweep's heatmaps equal the reference's patching; eval of the copy MATCHes, and a heatmap value
    changed afterwards is a MISMATCH."""
    ckpt, (clean, corrupted), (answer, foil) = bundled
    out = tmp_path / "patched.xlsx"
    text = xlgpt("patch", book, "--out", out, check=0).stdout
    assert "50 patches computed by ironcalc" in text and "every one agrees with the reference" in text
    assert "␣him/␣her" in text  # the position where the prompts differ
    want = reference.activation_patching(ckpt, clean, corrupted, answer, foil)
    info = read_book(out)
    for component, values in want.items():
        assert np.allclose(info.patching["heatmaps"][component], values, atol=1e-9, rtol=0), component
    result = json.loads(xlgpt("eval", out, "--engine", "ironcalc", "--json", check=0).stdout)
    assert result["match"] and result["checks"][C.PATCHING_HEATMAPS["head"]] < 1e-9
    assert result["checks"][C.ATTRIBUTION_CORRELATION] < 1e-9  # beside the heatmaps it is now a number
    cell = info.names[C.PATCHING_HEATMAPS["mlp_out"]].cell(1, 6)
    forged = tmp_path / "forged.xlsx"
    copy_with_cells(out, forged, {(info.sheets.index(cell.sheet) + 1, cell.top, cell.left): 0.5}, 0)
    forged_result = json.loads(xlgpt("eval", forged, "--engine", "ironcalc", "--json", check=1).stdout)
    assert not forged_result["match"] and forged_result["checks"][C.PATCHING_HEATMAPS["mlp_out"]] > 0.1


@pytest.mark.engines
def test_the_attribution_follows_the_books_interventions(book):
    """Attribution patching's backward pass goes through the head and MLP switches and the steering, as the
    reference's does: eval with them set matches, the attribution tables included."""
    sets = ["HeadSwitches[1,3]=0", "MlpSwitches[0]=0.5", "SteeringCoefficient=2", "LastPosition=6"]
    r = xlgpt("eval", book, "--engine", "ironcalc", "--json", *[a for s in sets for a in ("--set", s)], check=0)
    checks = json.loads(r.stdout)["checks"]
    assert all(checks[name] < 1e-9 for name in C.ATTRIBUTION_PATCHING.values()), checks


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corrupted", "I know her, I love", "--answer", ANSWER, "--foil", FOIL], "patching needs as many"),
        (["--corrupted", CORRUPTED, "--answer", " hime", "--foil", FOIL], "--answer ' hime' is 2 tokens"),
        (["--corrupted", CORRUPTED, "--answer", ANSWER], "--corrupted needs --foil"),
        (["--answer", ANSWER], "--answer and --foil go with --corrupted"),
        (["--corrupted", CORRUPTED, "--answer", ANSWER, "--foil", FOIL, "--train"], "a training book does not patch"),
    ],
)
def test_bad_patching_options_are_one_clear_error(tmp_path, args, message):
    out = tmp_path / "book.xlsx"
    r = xlgpt("build", "--prompt", CLEAN, *args, "--out", out)
    assert_clean_error(r, message)
    assert not out.exists()


def test_xlgpt_patch_refuses_what_it_cannot_patch(book, tmp_path):
    plain = tmp_path / "plain.xlsx"
    xlgpt("build", "--prompt", CLEAN, "--no-prompt-cell", "--out", plain, check=0)
    assert_clean_error(xlgpt("patch", plain), "not a patching book")
    before = book.read_bytes()
    assert_clean_error(xlgpt("patch", book, "--out", book), "is an input of this command")
    assert book.read_bytes() == before


@pytest.mark.engines
def test_every_engine_computes_a_patched_run(book):
    """LibreOffice, Gnumeric and IronCalc (the `formulas` engine, left out by --max-cells, computes the same book
    in ~40 s: eval --engine all on it MATCHes too)."""
    sets = ["--set", "PatchComponent=3", "--set", "PatchPosition=3"]
    r = xlgpt("eval", book, "--engine", "all", "--max-cells", 1, "--json", *sets, check=0)
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert {x["engine"] for x in results} == {"libreoffice", "gnumeric", "ironcalc"}
    assert all(x["match"] and x["checks"][C.LOGIT_DIFF] < 1e-9 for x in results)


@pytest.mark.engines
def test_xlgpt_patch_drives_libreoffice_too(book, bundled):
    ckpt, (clean, corrupted), (answer, foil) = bundled
    got = json.loads(xlgpt("patch", book, "--engine", "libreoffice", "--json", check=0).stdout)
    assert got["engine"] == "libreoffice"
    for component, values in reference.activation_patching(ckpt, clean, corrupted, answer, foil).items():
        assert np.allclose(got["heatmaps"][component], values, atol=1e-9, rtol=0), component
