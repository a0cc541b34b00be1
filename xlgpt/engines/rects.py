"""Any rectangles of recalculated books, with any engine (the tokenizer's batch books, the tests)."""

from pathlib import Path

import openpyxl

from xlgpt.engines.formulas import formulas_rect, quiet, sparse_model
from xlgpt.engines.gnumeric import ssconvert_csv
from xlgpt.engines.ironcalc import Model
from xlgpt.engines.libreoffice import soffice_csv
from xlgpt.package import XlgptError


def read_rects(books, engine="libreoffice", timeout=3600):
    """Recalculate books and read rectangles of them: `books` is [(path, [layout.Rect])]; returns, per book,
    one 2-D list of values per Rect (numbers as floats, text as str, errors as their text, empty as None).
    LibreOffice recalculates all books in one run, Gnumeric each book in its own (the Rects of a book must sit on
    one sheet)."""
    books = [(Path(p), rects) for p, rects in books]
    if engine == "formulas":
        out = []
        for path, rects in books:
            path = path.resolve()
            with quiet():
                refs = [f"'[{path}]{r.sheet.upper()}'!{r.ref(r.sheet, absolute=False)}" for r in rects]
                solution = sparse_model().from_ranges(*refs).finish().calculate()
            values = {k.upper(): v for k, v in solution.items()}
            out.append([formulas_rect(values, path.name, r) for r in rects])
        return out
    if engine == "ironcalc":  # in this process, one book at a time
        out = []
        for path, rects in books:
            model = Model(path, _sheet_names(path))
            model.evaluate()
            out.append([r.read(lambda row, col, r=r: _value(model.value(r.sheet, row, col))) for r in rects])
        return out
    if engine not in ("libreoffice", "gnumeric"):
        raise XlgptError(f"unknown engine {engine!r} (libreoffice, gnumeric, ironcalc or formulas)")
    for path, rects in books:
        if len({r.sheet for r in rects}) != 1:
            raise XlgptError(f"{path}: the results must sit on one sheet for the {engine} engine")
    grids = {}
    if engine == "gnumeric":  # one ssconvert run per book
        for k, (path, rects) in enumerate(books):
            grids[k] = ssconvert_csv(path, [rects[0].sheet], _sheet_names(path), timeout)[rects[0].sheet]
    else:  # one LibreOffice run per sheet position
        index = [_sheet_names(p).index(rects[0].sheet) + 1 for p, rects in books]
        for i in sorted(set(index)):
            group = [k for k, x in enumerate(index) if x == i]
            for k, grid in zip(group, soffice_csv([books[k][0] for k in group], i, timeout)):
                grids[k] = grid

    def cell(grid, r, c):
        return _value(grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None)

    return [[x.read(lambda r, c, k=k: cell(grids[k], r, c)) for x in rects] for k, (_, rects) in enumerate(books)]


def _value(v):
    """A cell as read_rects gives it: a float, a text (errors too) or None (empty)."""
    if v in (None, ""):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _sheet_names(path):
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return wb.sheetnames
    finally:
        wb.close()
