"""Engines: spreadsheet programs that recalculate a written workbook, one module each (formulas.py,
libreoffice.py with its UNO session, gnumeric.py).

Each returns the values of the workbook's defined names as 2-D float arrays (NaN where a cell holds an
error), so the checks in check/ never depend on how an engine stores its results. Given `more`, a function
of those values giving a list of layout.Rects (eval's search for the first stage that differs), an engine
also reads those cells of the recalculated book before it closes it: stats["more"], one 2-D float array per
Rect (LibreOffice through its CSV export reads only the one sheet of the names, and so no `more`).
"""

from xlgpt.engines.formulas import formulas_values
from xlgpt.engines.gnumeric import gnumeric_values
from xlgpt.engines.libreoffice import libreoffice_values

ENGINES = {"formulas": formulas_values, "libreoffice": libreoffice_values, "gnumeric": gnumeric_values}
