"""What a person sees when opening the workbook, read back with openpyxl."""

import numpy as np
import openpyxl
import pytest

from helpers import FIXTURES, expected, tokens_arg, xlgpt
from xlgpt.model.checkpoint import load


@pytest.fixture(scope="module")
def book(three_heads_book):
    return three_heads_book


def test_tabs_names_and_panes(book):
    wb = openpyxl.load_workbook(book)
    assert wb.sheetnames == [
        "Guide",
        "Tokens",
        "Embeddings",
        "Layer 0",
        "Layer 1",
        "Output",
        "Interventions",
        "Features",
        "Logit lens",
        "Attribution",
        "Heads",
        "Embeddings weights",
        "Layer 0 weights",
        "Layer 1 weights",
    ]
    assert {"Logits", "PredictedToken", "Predictions", "TokenIds", "Checkpoint", "WeightsSha256"} <= set(
        wb.defined_names
    )
    assert wb.defined_names["Predictions"].attr_text == "Output!$C$4:$I$4"  # 7 tokens: columns C..I
    predicted = wb.defined_names["PredictedToken"].attr_text.split("!")
    assert wb[predicted[0]][predicted[1].replace("$", "")].value == "=INDEX(Predictions,1,LastPosition)"
    last = wb.defined_names["LastPosition"].attr_text.split("!")
    assert wb[last[0]][last[1].replace("$", "")].value == 7  # the last of the 7 tokens
    for name in ["Embeddings", "Layer 0", "Output"]:
        assert wb[name].freeze_panes == ("C5" if name == "Output" else "C4")  # Output: + the prediction row
    assert wb["Layer 0"]["A2"].value == "position" and wb["Layer 0"]["A3"].value == "token id"
    assert [wb["Layer 1"].cell(2, 3 + t).value for t in range(7)] == list(range(7))


def test_visible_steps_are_classic_formulas(book):
    wb = openpyxl.load_workbook(book)
    texts = []
    for ws in wb.worksheets[:5]:
        for row in ws.iter_rows():
            for c in row:
                v = c.value
                texts.append(v.text if hasattr(v, "text") else v if isinstance(v, str) else "")
    formulas = " ".join(t for t in texts if t.startswith("="))
    for step in [
        "INDEX(",
        "AVERAGE(",
        "SUMPRODUCT(",
        "MMULT(",
        "TRANSPOSE(",
        "IF(",
        "-1E+30",
        "EXP(",
        "MAX(",
        "SUM(",
        "TANH(",
        "MATCH(",
    ]:
        assert step in formulas, step
    for modern in ["LET(", "LAMBDA(", "SEQUENCE(", "FILTER(", "_xlfn"]:
        assert modern not in formulas
    titles = " ".join(t for t in texts if t and not t.startswith("="))
    assert "Causal mask" in titles and "GELU" in titles and "head 2" in titles


def test_weights_are_shortest_float32_decimals(book):
    ckpt = load(FIXTURES / "three_heads")
    ws = openpyxl.load_workbook(book)["Layer 0 weights"]
    title_row = next(
        r for r in range(1, ws.max_row + 1) if str(ws.cell(r, 1).value).startswith("h.0.attn.c_attn.weight")
    )
    w = ckpt["h.0.attn.c_attn.weight"].T  # stored transposed: row = output feature
    top = title_row + 2
    cells = [[ws.cell(r, c).value for c in range(3, 3 + w.shape[1])] for r in range(top, top + w.shape[0])]
    assert np.array_equal(np.array(cells, dtype=np.float32), w)  # exact: every value round-trips
    # shortest: the float32 decimal, never the longer float64 expansion of the same value
    import zipfile

    sheet = openpyxl.load_workbook(book, read_only=True).sheetnames.index("Layer 0 weights") + 1
    xml = zipfile.ZipFile(book).read(f"xl/worksheets/sheet{sheet}.xml").decode()
    long_forms = [(str(x), repr(float(x))) for x in w[0] if str(x) != repr(float(x))]
    assert long_forms
    for short, long in long_forms:
        assert f"<v>{short}</v>" in xml and f"<v>{long}</v>" not in xml


def test_build_is_deterministic(tmp_path):
    tokens, _ = expected("tiny")
    paths = [tmp_path / "a.xlsx", tmp_path / "b.xlsx"]
    for p in paths:
        xlgpt("build", "--weights", FIXTURES / "tiny", "--tokens", tokens_arg(tokens), "--out", p, check=0)
    assert paths[0].read_bytes() == paths[1].read_bytes()
