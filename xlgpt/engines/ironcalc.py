"""IronCalc (PyPI `ironcalc`: a Rust engine built for Excel compatibility) as an engine, in this process: load the
.xlsx, recompute every formula, read full-precision values. It needs no office suite, and on books of the bundled
model's size it is the fastest engine (the default book: ~2.5 s to load, ~2.5 s to recompute); its products run at
~4M multiply-adds/s, so a 124M book is beyond it (see IRONCALC_MAX_CELLS)."""

import ironcalc
import numpy as np

from xlgpt.engines.process import as_float, peak_memory
from xlgpt.package import XlgptError
from xlgpt.safefile import announce

# Measured here: the 124M generation book (125M constants) took 112 s and 4.9 GB to load and had not finished
# recomputing after 18 minutes; the bundled model's books (~0.1M constants) take seconds.
IRONCALC_MAX_CELLS = 20_000_000


def load(path):
    """The book as an IronCalc model (its cached values are not used: evaluate() recomputes every formula)."""
    try:
        return ironcalc.load_from_xlsx(str(path), "en", "UTC")
    except Exception as e:  # the bindings raise their own WorkbookError with the engine's message
        raise XlgptError(f"IronCalc could not load {path.name}: {str(e).strip() or type(e).__name__}") from None


class Model:
    """A loaded book: set cells by sheet name, recompute, read Rects as float arrays (NaN for errors and text)."""

    def __init__(self, path, sheets):
        self.model = load(path)
        self.index = {name: i for i, name in enumerate(sheets)}

    def set_text(self, sheet, row, col, text):
        self.model.update_cell_with_text(self.index[sheet], row, col, text)

    def set_number(self, sheet, row, col, number):
        self.model.update_cell_with_number(self.index[sheet], row, col, float(number))

    def evaluate(self):
        self.model.evaluate()

    def value(self, sheet, row, col):
        return self.model.get_cell_value(self.index[sheet], row, col)

    def read(self, rect):
        sheet, get = self.index[rect.sheet], self.model.get_cell_value
        return np.array(rect.read(lambda r, c: as_float(get(sheet, r, c))), dtype=float)


def check_ironcalc_size(book, max_cells=IRONCALC_MAX_CELLS):
    if book.est_cells > max_cells:
        raise XlgptError(
            f"{book.path.name}: about {book.est_cells:,} cells is too large for IronCalc (limit {max_cells:,}; "
            f"its products run at ~4M multiply-adds/s); use --engine libreoffice"
        )


def check_ironcalc(book):
    """Refuse what IronCalc 0.9.1 cannot compute: a book beyond its size, and the tokenizer tabs of a Prompt-cell
    book (their array formulas need ISNUMBER, NOT, MOD, LOOKUP, VLOOKUP, MATCH, SMALL and UNICODE element by element
    over a row, which IronCalc computes once, for the first element or not at all: docs/engines.md)."""
    check_ironcalc_size(book)
    if book.typed:
        raise XlgptError(
            f"{book.path.name}: IronCalc cannot compute the tokenizer tabs of a Prompt-cell book (some functions "
            f"work on a single value only); use --engine libreoffice, or build with --tokens"
        )


def ironcalc_values(book, wanted, more=None):
    """Recompute with IronCalc and read the wanted defined names (and `more`'s Rects)."""
    check_ironcalc(book)
    with peak_memory() as stats:
        model = Model(book.path, book.sheets)
        announce("engine")
        model.evaluate()
        out = {name: model.read(book.names[name]) for name in wanted}
    if more is not None:
        stats["more"] = [model.read(rect) for rect in more(out)]
    return out, stats
