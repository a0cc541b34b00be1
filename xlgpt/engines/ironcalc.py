"""IronCalc (PyPI `ironcalc`: a Rust engine built for Excel compatibility) as an engine, in this process: load the
.xlsx, recompute every formula, read full-precision values. It needs no office suite, and on books of the bundled
model's size it is the fastest engine (the default book: ~2.5 s to load, ~2.5 s to recompute); its products run at
~4M multiply-adds/s, so at 124M LibreOffice is 3× faster (see IRONCALC_FASTEST_UP_TO)."""

import contextlib
import os
import sys
import time

import ironcalc
import numpy as np

from xlgpt.engines.process import as_float, peak_memory, peak_rss_mb
from xlgpt.package import XlgptError
from xlgpt.safefile import announce
from xlgpt.sheet import contract as C

# Measured here in one run (bench/bench.py --engines-at-scale 16): a 6.8M-cell book loads in 9 s and recomputes in
# 5 s (LibreOffice's eval: 28 s); the 124M generation book (130M cells) in 74 s + 989 s at 4.8 GB (LibreOffice's
# eval: 339 s). Beyond IRONCALC_MAX_CELLS its memory (~37 bytes a cell) would take much of a 24 GB machine.
IRONCALC_FASTEST_UP_TO = 20_000_000
IRONCALC_MAX_CELLS = 250_000_000


def ironcalc_fastest(book):
    """Whether IronCalc is the fastest engine for `book` (else LibreOffice is)."""
    return book.est_cells <= IRONCALC_FASTEST_UP_TO


@contextlib.contextmanager
def silenced():
    """IronCalc's loader prints a line for each cell whose cached value it cannot type (e.g. an empty text), on
    this process's own stdout and stderr: keep them for xlgpt's output."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def load(path):
    """The book as an IronCalc model (its cached values are not used: evaluate() recomputes every formula)."""
    try:
        with silenced():
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


class IronCalcSheet:
    """A book loaded once for many edits (generate, train, eval --prompts), by defined names: every calculate()
    recomputes the whole book."""

    def __init__(self, info):
        check_ironcalc_size(info)
        t0 = time.perf_counter()
        self.info, self.model = info, Model(info.path, info.sheets)
        self.calculate()
        self.load_seconds = time.perf_counter() - t0

    def set(self, name, value, index=None):
        """One cell of a defined name (its first, or the `index`-th of a row or column): text or a number."""
        cell = self.info.names[name].at(index or 0)
        if isinstance(value, str):
            self.model.set_text(cell.sheet, cell.top, cell.left, value)
        else:
            self.model.set_number(cell.sheet, cell.top, cell.left, value)

    def calculate(self):
        self.model.evaluate()

    def put(self, name, rows):
        """Numbers over a whole defined name, for the next calculate()."""
        rect = self.info.names[name]
        for i, row in enumerate(np.asarray(rows, dtype=float)):
            for j, v in enumerate(row):
                self.model.set_number(rect.sheet, rect.top + i, rect.left + j, v)

    def read(self, names):
        return {n: self.model.read(self.info.names[n]) for n in names}

    def read_rects(self, rects):
        return [self.model.read(r) for r in rects]

    def copy(self, pairs):
        """Each source name's computed values become the target's (all read before any is written)."""
        values = self.read([source for source, _ in pairs])
        for source, target in pairs:
            self.put(target, values[source])

    def result(self, position, chosen):
        self.calculate()
        logits = self.model.read(self.info.names[C.LOGITS].col(position))[:, 0]
        cell = self.info.names[chosen]
        return logits, self.model.value(cell.sheet, cell.top, cell.left)

    peak_rss_mb = staticmethod(peak_rss_mb)  # IronCalc computes in this process


def check_ironcalc_size(book, max_cells=IRONCALC_MAX_CELLS):
    if book.est_cells > max_cells:
        raise XlgptError(
            f"{book.path.name}: about {book.est_cells:,} cells is too large for IronCalc (limit {max_cells:,}; "
            f"it holds ~37 bytes a cell); use --engine libreoffice"
        )


def ironcalc_values(book, wanted, more=None):
    """Recompute with IronCalc and read the wanted defined names (and `more`'s Rects)."""
    check_ironcalc_size(book)
    with peak_memory() as stats:
        model = Model(book.path, book.sheets)
        announce("engine")
        model.evaluate()
        out = {name: model.read(book.names[name]) for name in wanted}
    if more is not None:
        stats["more"] = [model.read(rect) for rect in more(out)]
    return out, stats
