"""The formulas engine's model (xlgpt.engines.formulas.sparse_model) computes what the `formulas` package's own
ExcelModel computes: constants handed over as blocks, formulas sharing one compiled function."""

import contextlib
import io

import formulas
import numpy as np
import openpyxl
from openpyxl.worksheet.formula import ArrayFormula

from xlgpt.engines.formulas import _constant_blocks, _SharedFunction, sparse_model


def _book(path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Main"
    w = wb.create_sheet("W")
    for i in range(6):  # a block of constants, a column of them and a lone one
        for j in range(4):
            w.cell(row=2 + i, column=2 + j, value=(i + 1) * 0.1 + j * 1.0000000000000002)
        w.cell(row=2 + i, column=8, value=i * 7)
    w["J20"] = 3.5
    w["B10"] = "label"
    for k, col in enumerate("BCDE"):  # one formula per column: same form, other cells
        ws[f"{col}1"] = k + 1
        ws[f"{col}2"] = f"=SUM(W!${col}$2:${col}$7)*{col}1+{col}1^2"
        ws[f"{col}3"] = f"=W!{col}3-W!{col}4+ROW()+COLUMN()"
        ws[f"{col}4"] = f"=IF({col}1>2,W!$J$20,W!$H$3)"
        ws[f"{col}5"] = ArrayFormula(f"{col}5:{col}7", f"=W!{col}2:{col}4*{col}1")
        ws[f"{col}8"] = f"=SUMPRODUCT(W!$B$3:$E$3,W!$B$4:$E$4)+{col}2"
    ws["B9"] = "=LOOKUP(2.5,W!$H$2:$H$7,W!$C$2:$C$7)"
    ws["C9"] = "=LOOKUP(3.5,W!$H$2:$H$7,W!$D$2:$D$7)"
    wb.save(path)


def _values(model, path):
    with contextlib.redirect_stderr(io.StringIO()):
        solution = model.loads(str(path)).finish().calculate()
    out = {}
    for k, v in solution.items():
        if "MAIN" in k.upper() and hasattr(v, "value"):
            out[k.upper()] = np.asarray(v.value, dtype=object).tolist()
    return out


def test_sparse_model_computes_what_the_package_computes(tmp_path):
    path = tmp_path / "book.xlsx"
    _book(path)
    model = sparse_model()
    ours, theirs = _values(model, path), _values(formulas.ExcelModel(), path)
    shared = [
        d["function"]
        for d in model.dsp.function_nodes.values()
        if isinstance(getattr(d["function"], "func", None), _SharedFunction)
    ]
    assert len(shared) >= 12  # B's formulas compiled, C..E's reusing them (all but the ROW() one)
    for cell in ("B2", "E2", "C3", "E3", "B4", "E4", "B5:B7", "D5:D7", "C8", "B9", "C9"):
        key = f"'[BOOK.XLSX]MAIN'!{cell}"
        assert ours[key] == theirs[key], cell
    assert ours["'[BOOK.XLSX]MAIN'!E4"] == [[3.5]] and ours["'[BOOK.XLSX]MAIN'!B4"] == [[7]]


def test_constant_blocks_are_rectangles_of_numbers(tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    for i in range(3):
        for j in range(3):
            ws.cell(row=1 + i, column=1 + j, value=i * 3 + j)
    ws["B2"] = "text"  # splits the middle row
    ws["E5"] = 1.5  # alone
    cells = [ws._cells[k] for k in sorted(ws._cells)]
    blocks, rest = _constant_blocks(cells, [])
    shapes = sorted((b[0][0].coordinate, b[-1][-1].coordinate) for b in blocks)
    assert shapes == [("A1", "C1"), ("A3", "C3")]
    assert sorted(c.coordinate for c in rest) == ["A2", "B2", "C2", "E5"]
