"""Dump an xlgpt .xlsx as a plain JSON description of its cells, for building the model inside wasm.
Usage: cells_json.py BOOK.xlsx OUT.json
{"sheets": [name, ...], "cells": [[[row, col, kind, text(, height, width)], ...] per sheet], "names": [[name, formula]]}
kind: "n" number, "s" string, "b" boolean, "f" formula (text without '='), "a" array formula (+ height, width).
Shared formulas are expanded to each cell's own formula (openpyxl's Translator); `_xlfn.` prefixes are dropped."""
import json, re, sys, time
import openpyxl
from openpyxl.worksheet.formula import ArrayFormula
from openpyxl.utils.cell import range_boundaries

t0 = time.perf_counter()
src, dst = sys.argv[1], sys.argv[2]
wb = openpyxl.load_workbook(src, read_only=True)
strip = lambda f: re.sub(r"_xl(fn|ws)\.", "", f)
out = {"sheets": wb.sheetnames, "cells": [], "names": []}
stats = {}
for ws in wb.worksheets:
    cells, children = [], set()  # children: cells an array formula fills
    for row in ws.iter_rows():
        for cell in row:
            v = getattr(cell, "value", None)
            if v is None:
                continue
            r, c = cell.row, cell.column
            if isinstance(v, ArrayFormula):
                c1, r1, c2, r2 = range_boundaries(v.ref)
                children.update((i, j) for i in range(r1, r2 + 1) for j in range(c1, c2 + 1))
                cells.append([r, c, "a", strip(v.text.lstrip("=")), r2 - r1 + 1, c2 - c1 + 1])
            elif (r, c) in children:
                continue  # cached value of an array formula's child
            elif isinstance(v, str) and v.startswith("="):
                cells.append([r, c, "f", strip(v[1:])])
            elif isinstance(v, bool):
                cells.append([r, c, "b", "TRUE" if v else "FALSE"])
            elif isinstance(v, (int, float)):
                cells.append([r, c, "n", repr(v)])
            else:
                cells.append([r, c, "s", str(v)])
    out["cells"].append(cells)
    stats[ws.title] = len(cells)
for name, d in wb.defined_names.items():
    out["names"].append([name, strip(d.attr_text)])
with open(dst, "w") as f:
    json.dump(out, f, separators=(",", ":"))
kinds = {}
for cs in out["cells"]:
    for x in cs:
        kinds[x[2]] = kinds.get(x[2], 0) + 1
print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "kinds": kinds, "names": len(out["names"])}), file=sys.stderr)
