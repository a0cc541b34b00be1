"""A slow, obviously-correct oracle: the same sheets and names written cell by cell with openpyxl."""

import numpy as np
import openpyxl
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula as OpenpyxlArray

from xlgpt.decimals import decimal_values
from xlgpt.sheet.cells import ArrayFormula, Cells, Formula, Numbers


def write(path, sheets, names):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for sheet in sheets:
        ws = wb.create_sheet(sheet.name)
        for b in sheet.blocks:
            if isinstance(b, Numbers):
                values = decimal_values(b.values) if b.values.dtype == np.float32 else b.values
                for i, row in enumerate(values):
                    for j, v in enumerate(row):
                        ws.cell(b.top + i, b.left + j, float(v) if values.dtype.kind == "f" else int(v))
            elif isinstance(b, ArrayFormula):
                r = b.region
                ws.cell(r.top, r.left).value = OpenpyxlArray(r.ref(r.sheet, absolute=False), "=" + b.formula)
            elif isinstance(b, Cells):
                for i, row in enumerate(b.rows):
                    for j, v in enumerate(row):
                        if v is not None:
                            ws.cell(b.top + i, b.left + j, "=" + v if isinstance(v, Formula) else v)
        if sheet.freeze:
            ws.freeze_panes = ws.cell(*sheet.freeze)
    for name, region in names.items():
        wb.defined_names[name] = DefinedName(name, attr_text=region.ref())
    wb.save(path)
