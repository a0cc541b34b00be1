"""Engines: spreadsheet programs that recalculate a written workbook, one module each (formulas.py,
libreoffice.py with its UNO session, gnumeric.py, ironcalc.py).

Each returns the values of the workbook's defined names as 2-D float arrays (NaN where a cell holds an
error), so the checks in check/ never depend on how an engine stores its results. Given `more`, a function
of those values giving a list of layout.Rects (eval's search for the first stage that differs), an engine
also reads those cells of the recalculated book before it closes it: stats["more"], one 2-D float array per
Rect (LibreOffice through its CSV export reads only the one sheet of the names, and so no `more`).

Each also has a check: it raises XlgptError, saying why, when the engine cannot compute a book here (not
installed, too large, a part it computes differently), before any slow work.
"""

from typing import Callable, NamedTuple

from xlgpt.engines.formulas import check_formulas, formulas_values
from xlgpt.engines.gnumeric import find_ssconvert, gnumeric_values
from xlgpt.engines.ironcalc import check_ironcalc_size, ironcalc_values
from xlgpt.engines.libreoffice import libreoffice_values
from xlgpt.engines.process import find_soffice
from xlgpt.package import XlgptError


class Engine(NamedTuple):
    values: Callable  # values(book, wanted, more=None, **options) -> ({name: array}, stats)
    check: Callable  # check(book, **options): raises XlgptError when it cannot compute the book here
    options: tuple  # the settings of eval it takes: "max_cells", "timeout"

    def given(self, settings):
        """This engine's options among eval's settings."""
        return {k: v for k, v in settings.items() if k in self.options}

    def refusal(self, book, settings):
        """Why this engine cannot compute `book` here, or None when it can."""
        try:
            self.check(book, **self.given(settings))
        except XlgptError as e:
            return str(e)
        return None


ENGINES = {
    "formulas": Engine(formulas_values, check_formulas, ("max_cells",)),
    "libreoffice": Engine(libreoffice_values, lambda book, **_: find_soffice(), ("timeout",)),
    "gnumeric": Engine(gnumeric_values, lambda book, **_: find_ssconvert(), ("timeout",)),
    "ironcalc": Engine(ironcalc_values, check_ironcalc_size, ()),
}
