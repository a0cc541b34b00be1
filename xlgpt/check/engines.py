"""Spreadsheet engines that recalculate a written workbook: the `formulas` package and LibreOffice.

Both return the values of the workbook's defined names as 2-D float arrays (NaN where a cell holds an
error), so the checks in verify.py never depend on how an engine stores its results.
"""
import contextlib
import csv
import io
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import XlgptError
from ..contract import read_book  # noqa: F401  (engines take a contract.BookInfo)

FORMULAS_MAX_CELLS = 500_000  # ~3 GB and a few minutes in `formulas`; LibreOffice handles far more
# `formulas` compiles every formula on its own (~5-10 ms each; an array formula counts once)
FORMULAS_MAX_FORMULAS = 20_000


@contextlib.contextmanager
def _peak_memory():
    """Measures wall time and the peak resident memory of this process or its children (MB)."""
    stats = {}
    t0 = time.perf_counter()
    yield stats
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    stats["peak_rss_mb"] = round(peak / 1024)


def _as_float(value):
    try:
        if isinstance(value, str) and value.endswith("%"):  # LibreOffice's CSV keeps a percentage's sign
            return float(value[:-1]) / 100
        return float(value)
    except (TypeError, ValueError):
        return float("nan")  # an error value such as #VALUE! or Err:502


def check_formulas_size(book, max_cells=FORMULAS_MAX_CELLS, max_formulas=FORMULAS_MAX_FORMULAS):
    if book.est_cells > max_cells:
        raise XlgptError(f"{book.path.name}: about {book.est_cells:,} cells is too large for the formulas engine "
                         f"(limit {max_cells:,}); use --engine libreoffice")
    n = book.n_formulas
    if n > max_formulas:
        hint = " (or build with a smaller --capacity)" if book.typed else ""
        raise XlgptError(f"{book.path.name}: {n:,} formulas would take the formulas engine too long (limit "
                         f"{max_formulas:,}, ~10 ms each); use --engine libreoffice{hint}")


def formulas_values(book, wanted, max_cells=FORMULAS_MAX_CELLS):
    """Recalculate with the `formulas` package and read the wanted defined names."""
    check_formulas_size(book, max_cells)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars would drown ours
        import formulas

        with _peak_memory() as stats:
            model = formulas.ExcelModel().loads(str(book.path)).finish()
            solution = model.calculate()
    results = {k.upper(): v for k, v in solution.items()}
    out = {}
    for name in wanted:
        key = f"'[{book.path.name}]'!{name}".upper()
        if key not in results:
            raise XlgptError(f"{book.path.name}: the formulas engine computed no value for {name}")
        out[name] = np.vectorize(_as_float, otypes=[float])(np.asarray(results[key].value, dtype=object))
    return out, stats


def find_soffice():
    exe = shutil.which("soffice") or shutil.which("libreoffice")
    if not exe:
        raise XlgptError("LibreOffice is not installed (no 'soffice' on PATH); install it, e.g. "
                         "apt-get install libreoffice-calc-nogui, or use --engine formulas")
    return exe


def soffice_csv(paths, sheet_index, timeout=3600):
    """Recalculate books in ONE headless LibreOffice run (one start-up, its own temporary profile) and
    return each book's sheet `sheet_index` (1-based) as a CSV grid: a list of rows of strings."""
    exe = find_soffice()
    with tempfile.TemporaryDirectory(prefix="xlgpt-lo-") as tmp:
        tmp = Path(tmp)
        sources = []
        for i, path in enumerate(paths):
            sources.append(tmp / f"book{i}.xlsx")
            os.symlink(Path(path).resolve(), sources[-1])
        opts = f"44,34,76,1,,0,false,true,false,false,false,{sheet_index}"
        cmd = [exe, f"-env:UserInstallation=file://{tmp / 'profile'}", "--headless", "--calc",
               "--convert-to", f"csv:Text - txt - csv (StarCalc):{opts}", *map(str, sources), "--outdir", str(tmp / "out")]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise XlgptError(f"LibreOffice did not finish within {timeout} s")
        grids = []
        for source, path in zip(sources, paths):
            # <stem>-<sheet>.csv, or <stem>.csv for a one-sheet book
            found = sorted((tmp / "out").glob(source.stem + "-*.csv")) + sorted((tmp / "out").glob(source.stem + ".csv"))
            if not found:
                raise XlgptError(f"LibreOffice could not convert {Path(path).name}: "
                                 f"{(run.stderr or run.stdout).strip().splitlines()[-1:] or 'no output'}")
            with open(found[0], newline="", encoding="utf-8") as f:
                grids.append(list(csv.reader(f)))
        return grids


def uno_values(book, wanted, timeout=3600):
    """Recalculate with LibreOffice through its UNO bridge (a LibreOfficeSession: load, which calculates
    every formula, then read the names, on any sheets)."""
    from .session import LibreOfficeSession

    t0 = time.perf_counter()
    with LibreOfficeSession(timeout=timeout) as lo:
        values = lo.open(book.path).read(wanted)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stats = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": max(round(own), lo.peak_rss_mb())}
    return values, stats


def uno_available():
    from .session import system_python

    try:
        system_python()
        return True
    except XlgptError:
        return False


def libreoffice_values(book, wanted, timeout=3600, via=None):
    """Recalculate with headless LibreOffice and read the names: through the UNO bridge when it is installed
    (or the names span several sheets), else by a CSV export of the one sheet holding them.
    via: "uno" or "csv" to choose."""
    sheets = {book.names[n].sheet for n in wanted}
    if via is None:
        via = "uno" if len(sheets) != 1 or uno_available() else "csv"
    if via == "uno":
        return uno_values(book, wanted, timeout)
    if len(sheets) != 1:
        raise XlgptError("the results must sit on one sheet for LibreOffice's CSV export")
    with _peak_memory() as stats:
        grid = soffice_csv([book.path], book.sheets.index(sheets.pop()) + 1, timeout)[0]
    out = {}
    for name in wanted:
        cell = lambda r, c: _as_float(grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None)
        out[name] = np.array(book.names[name].read(cell))
    return out, stats


ENGINES = {"formulas": formulas_values, "libreoffice": libreoffice_values}
