"""The interventions (head and MLP switches, steering) against transformers' GPT2LMHeadModel with forward hooks.

tests/fixtures/interventions.json comes from tests/make_intervention_fixtures.py (dev-only: torch and
transformers; nothing here imports them). transformers ran in float64 on the checkpoint's float32 weights,
as the reference does, so the two agree to rounding. The fast tests prove the reference's Edits against the
hooks; the engine test proves a book with the same edits set through `eval --set` against the reference
(eval's 1e-6 verdict) and directly against the hooked transformers logits.
"""

import json

import numpy as np
import pytest

from helpers import FIXTURES, assert_clean_error, tokens_arg, xlgpt
from xlgpt.model import reference
from xlgpt.model.checkpoint import load

DATA = json.loads((FIXTURES / "interventions.json").read_text())
CASES = [(shape, case) for shape, entry in DATA["shapes"].items() for case in entry["cases"]]
KINDS = {"head_off", "head_half", "mlp_off", "mlp_half", "steering", "combined"}


def edits_of(case):
    return reference.Edits(
        np.array(case["head_switches"], dtype=float),
        np.array(case["mlp_switches"], dtype=float),
        case["steering_layer"],
        case["steering_coefficient"],
        np.array(case["steering_vector"], dtype=float),
    )


def sets_of(case):
    """The `eval --set` options that put a case's edits into a book's Interventions tab."""
    out = [f"HeadSwitches[{i},{h}]={s!r}" for i, row in enumerate(case["head_switches"]) for h, s in enumerate(row)]
    out += [f"MlpSwitches[{i}]={s!r}" for i, s in enumerate(case["mlp_switches"])]
    out += [f"SteeringLayer={case['steering_layer']}", f"SteeringCoefficient={case['steering_coefficient']!r}"]
    out += [f"SteeringVector[{k}]={x!r}" for k, x in enumerate(case["steering_vector"])]
    return [arg for s in out for arg in ("--set", s)]


def test_fixture_covers_every_kind():
    assert len(DATA["shapes"]) == 3
    for entry in DATA["shapes"].values():
        assert set(entry["cases"]) == KINDS


@pytest.mark.parametrize("shape,case", CASES)
def test_reference_edits_match_transformers_hooks(shape, case):
    entry = DATA["shapes"][shape]
    c = entry["cases"][case]
    ckpt = load(FIXTURES / entry["checkpoint"])
    hf = np.array(c["logits"])
    ours = reference.logits(ckpt, entry["tokens"], edits_of(c))
    assert ours.shape == hf.shape == (len(entry["tokens"]), ckpt.config.vocab_size)
    # both float64 on the same float32 weights: the brief's 1e-5 (enough for a float32 model) holds with room
    # to spare; 1e-9 as in test_reference.py
    np.testing.assert_allclose(ours, hf, rtol=0, atol=1e-9)
    # and the edit did something: not the unedited logits
    assert np.abs(hf - reference.logits(ckpt, entry["tokens"])).max() > 0.1


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    entry = DATA["shapes"]["tiny"]
    path = tmp_path_factory.mktemp("interventions") / "tiny.xlsx"
    xlgpt(
        "build",
        "--weights",
        FIXTURES / entry["checkpoint"],
        "--tokens",
        tokens_arg(entry["tokens"]),
        "--out",
        path,
        check=0,
    )
    return path


@pytest.mark.engines
def test_book_with_combined_edits_matches_transformers(tiny_book, tmp_path):
    from xlgpt.check.verify import reference_edits, with_edits
    from xlgpt.engines.libreoffice import libreoffice_values
    from xlgpt.sheet.read import read_book

    entry = DATA["shapes"]["tiny"]
    case = entry["cases"]["combined"]
    args = sets_of(case)
    # eval's verdict: LibreOffice's logits against the reference with the same edits, within 1e-6
    run = xlgpt("eval", tiny_book, "--engine", "libreoffice", "--json", *args, check=0)
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    hf = np.array(case["logits"])
    assert result["match"] is True and result["max_abs_logit_diff"] <= 1e-6
    assert result["token_id"] == result["reference_token_id"] == int(hf[-1].argmax())
    # and the book's own numbers against the hooked transformers logits
    book = with_edits(read_book(tiny_book), args[1::2], tmp_path)
    edits = reference_edits(book, load(FIXTURES / "tiny").config)
    for got, want in zip(vars(edits).values(), vars(edits_of(case)).values()):
        np.testing.assert_array_equal(got, want)  # the --set options landed in the right cells
    values, _ = libreoffice_values(book, ["Logits"])
    # the book holds the weights' shortest float32 decimals, transformers the float32 values: close, not equal
    np.testing.assert_allclose(values["Logits"].T, hf, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "option,words",
    [
        ("Bogus[0]=1", ["Bogus", "is not a cell this workbook lets you set"]),
        ("HeadSwitches[2,0]=0", ["HeadSwitches is 2 x 4"]),
        ("HeadSwitches[0,4]=0", ["HeadSwitches is 2 x 4"]),
        ("MlpSwitches[7]=0", ["MlpSwitches"]),
        ("SteeringVector[16]=1", ["SteeringVector"]),
        ("SteeringCoefficient=lots", ["'lots' is not a number"]),
        ("MlpSwitches[0]=nan", ["not a finite number"]),
        ("HeadSwitches[0,0]", ["expected NAME=VALUE"]),
    ],
)
def test_bad_set_is_a_clean_error(tiny_book, option, words):
    run = xlgpt("eval", tiny_book, "--engine", "libreoffice", "--set", "MlpSwitches[0]=0.5", "--set", option)
    assert_clean_error(run, "--set", *words)
