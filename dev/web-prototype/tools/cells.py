"""Print JSON {name: [sheet_index, row, col]} (top-left cell) for a book's defined names."""
import json, sys, openpyxl
from openpyxl.utils.cell import range_boundaries
wb = openpyxl.load_workbook(sys.argv[1], read_only=True)
out = {}
for n, d in wb.defined_names.items():
    try:
        for sheet, ref in d.destinations:
            c1, r1, c2, r2 = range_boundaries(ref.replace("$", ""))
            out[n] = [wb.sheetnames.index(sheet), r1, c1, r2, c2]
    except Exception:
        pass
print(json.dumps(out))
