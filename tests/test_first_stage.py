"""Where a book goes wrong: on a mismatch, eval names the first stage (tab, block, cell) that leaves the reference."""

import json

import numpy as np
import pytest

from helpers import FIXTURES, expected, tokens_arg, xlgpt
from xlgpt.check import verify
from xlgpt.check.provenance import Provenance, recompile
from xlgpt.compile.template import load_spec
from xlgpt.model import reference
from xlgpt.model.checkpoint import as_written, load
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book
from xlgpt.sheet.writer import copy_with_cell


def build(name, directory, tokens=None):
    tokens = tokens or expected(name)[0]
    path = directory / f"{name}.xlsx"
    xlgpt("build", "--weights", FIXTURES / name, "--tokens", tokens_arg(tokens), "--out", path, check=0)
    return path


def corrupt(book, name, i, j, value, out):
    """A copy of `book` with cell [i, j] of the defined name `name` (a weight) set to `value`."""
    info = read_book(book)
    cell = info.names[name].cell(i, j)
    copy_with_cell(book, out, info.sheets.index(cell.sheet) + 1, cell.top, cell.left, value)
    return out


def past_provenance(monkeypatch):
    """eval without its provenance check, which now refuses a corrupted weight before any engine runs (naming the
    cell): the search below is what names the stage when an engine's numbers leave the reference anyway."""
    monkeypatch.setattr(verify, "check_compiled", lambda book, sheets, names, cached=(): Provenance())


def searched(book):
    """(stage_references of a book, the reference's values laid out as the book's cells hold them)."""
    info = read_book(book)
    ckpt = verify.checkpoint_for(info)
    cache = reference.run(as_written(ckpt), info.used)[1]
    found = verify.stage_references(recompile(info, ckpt, None)[2], cache, len(info.used))
    pad = lambda r, want: ((0, r.height - want.shape[0]), (0, r.width - want.shape[1]))
    return found, [
        np.pad(want.astype(float), pad(r, want), constant_values=np.nan)
        for _, blocks in found
        for r, want, *_ in blocks
    ]


def test_the_reference_records_every_stage_in_the_templates_order():
    ckpt = load(FIXTURES / "tiny")
    tokens, _ = expected("tiny")
    logits, cache = reference.run(ckpt, tokens)
    name, layer, last = cache["stages"][-1]
    assert (name, layer) == ("logits", None) and np.array_equal(last, logits)  # exactly: the same array
    recorded = [(n, l) for n, l, _ in cache["stages"]]
    stages = load_spec(ckpt.config).stages  # but activation patching's, which pass their input on in this book
    model = [(s.name, s.layer) for s in stages if (s.name, s.layer) in set(recorded) and not s.op.startswith("patch")]
    assert recorded == model
    assert recorded.count(("x", 1)) == 3  # after the steering, the attention and the MLP
    scores = dict(((n, l), v) for n, l, v in cache["stages"])[("scores", 0)]
    assert scores.shape == (ckpt.config.n_head, len(tokens), len(tokens))  # [head, query, key]


def test_first_difference_finds_the_stage_it_was_given(tmp_path):
    found, values = searched(build("three_heads", tmp_path))
    names = [(stage.name, stage.layer) for stage, _ in found]
    assert names[:4] == [("tokens", None), ("token_embedding", None), ("position_embedding", None), ("x", None)]
    assert names[-2:] == [("ln_f", None), ("logits", None)]
    assert verify.first_difference(found, values) is None
    # head 2's attention weights of layer 1, and (later) the logits: the attention is named
    k = [i for i, (stage, blocks) in enumerate(found) for _ in blocks]
    at = next(n for n, i in enumerate(k) if found[i][0].name == "attention" and found[i][0].layer == 1) + 2
    values[at][1, 2] += 0.5  # key 1, query 2
    values[-1][4, 0] = np.nan  # an error in the logits
    d = verify.first_difference(found, values)
    assert (d["stage"], d["layer"], d["head"], d["tab"], d["position"]) == ("attention", 1, 2, "Layer 1", 2)
    assert d["got"] - d["want"] == pytest.approx(0.5)
    # the masked cells (a key after its query) are not compared
    values[at][1, 2] -= 0.5
    values[at][2, 1] += 7
    d = verify.first_difference(found, values)
    assert d["stage"] == "logits" and d["got"] is None
    assert "an error or an empty cell" in verify.describe_difference(d)


@pytest.mark.engines
def test_a_corrupted_c_attn_weight_is_found_at_qkv(tmp_path, monkeypatch):
    book = corrupt(build("tiny", tmp_path, [5, 17, 3]), "L0_attn_c_attn_weight_T", 3, 2, 0.9, tmp_path / "bad.xlsx")
    run = xlgpt("eval", book, "--engine", "formulas", check=1)  # the weight itself, before any engine
    assert "MISMATCH: 'Layer 0 weights'!" in run.stdout and "holds 0.9 where the checkpoint's value" in run.stdout
    past_provenance(monkeypatch)
    run = xlgpt("eval", book, "--engine", "formulas", check=1)
    assert "MISMATCH" in run.stdout
    assert "first difference: Layer 0 · qkv (Queries, keys and values: …) at 'Layer 0'!" in run.stdout
    run = xlgpt("eval", book, "--engine", "libreoffice", "--json", check=1)
    [r] = [json.loads(line) for line in run.stdout.splitlines()]
    d = r["first_difference"]
    assert (d["stage"], d["layer"], d["head"], d["tab"]) == ("qkv", 0, None, "Layer 0")
    assert d["title"].startswith("Queries, keys and values") and abs(d["got"] - d["want"]) > 1e-3


@pytest.mark.engines
def test_a_corrupted_ln_2_weight_of_layer_1_is_found_at_its_ln_2(tmp_path, monkeypatch):
    book = corrupt(build("three_heads", tmp_path), "L1_ln_2_weight", 4, 0, 3.0, tmp_path / "bad.xlsx")
    past_provenance(monkeypatch)
    run = xlgpt("eval", book, "--engine", "libreoffice", "--json", "--set", "HeadSwitches[0,1]=0", check=1)
    [r] = [json.loads(line) for line in run.stdout.splitlines()]
    d = r["first_difference"]
    assert (d["stage"], d["layer"], d["tab"]) == ("ln_2", 1, "Layer 1") and not r["match"]
    [rect] = [blocks[0][0] for stage, blocks in searched(book)[0] if (stage.name, stage.layer) == ("ln_2", 1)]
    assert d["cell"] == rect.cell(4, d["position"]).ref(absolute=False)  # feature 4's row


@pytest.mark.engines
def test_a_corrupted_wte_row_of_a_prompt_token_is_found_at_the_token_embedding(tmp_path, monkeypatch):
    tokens = [5, 17, 3]
    book = corrupt(build("tiny", tmp_path, tokens), "wte_weight", 17, 6, 2.5, tmp_path / "bad.xlsx")
    past_provenance(monkeypatch)
    run = xlgpt("eval", book, "--engine", "gnumeric", "--json", check=1)
    [r] = [json.loads(line) for line in run.stdout.splitlines()]
    d = r["first_difference"]
    where = (d["stage"], d["layer"], d["tab"], d["position"], d["got"])
    assert where == ("token_embedding", None, "Embeddings", 1, 2.5)


@pytest.mark.engines
def test_a_book_that_matches_reports_no_first_difference(tmp_path):
    book = build("three_heads", tmp_path)
    run = xlgpt("eval", book, "--engine", "libreoffice", "--json", check=0)
    [r] = [json.loads(line) for line in run.stdout.splitlines()]
    assert r["match"] and "first_difference" not in r
    # and every stage the search reads agrees with the reference as LibreOffice computes it
    from xlgpt.engines.libreoffice import uno_values

    found, _ = searched(book)
    _, stats = uno_values(read_book(book), [C.LOGITS], more=lambda values: [r for _, b in found for r, *_ in b])
    assert verify.first_difference(found, stats["more"]) is None
