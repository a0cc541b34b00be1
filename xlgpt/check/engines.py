"""Spreadsheet engines that recalculate a written workbook: the `formulas` package, LibreOffice and Gnumeric.

Each returns the values of the workbook's defined names as 2-D float arrays (NaN where a cell holds an
error), so the checks in verify.py never depend on how an engine stores its results.
"""
import contextlib
import csv
import io
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import XlgptError

# Rough size of one cell in sheet XML, to estimate a book's cell count before loading it.
BYTES_PER_CELL = 12
FORMULAS_MAX_CELLS = 500_000  # ~3 GB and a few minutes in `formulas`; LibreOffice handles far more
# `formulas` compiles every formula on its own (~5-10 ms each; an array formula counts once)
FORMULAS_MAX_FORMULAS = 20_000


@dataclass
class Named:
    sheet: str
    top: int
    left: int
    bottom: int
    right: int


@dataclass
class BookInfo:
    path: Path
    sheets: list
    names: dict   # name -> Named
    values: dict  # name -> constant value of single-cell names that hold constants (e.g. Checkpoint)
    tokens: list    # the token ids, or None when the book tokenizes its Prompt cell itself (typed)
    est_cells: int

    @property
    def typed(self):
        return "LogitsInPrompt" in self.names

    @cached_property
    def n_formulas(self):
        """The number of formulas in the sheets (an array formula counts once); reads every sheet."""
        with zipfile.ZipFile(self.path) as zf:
            return sum(zf.read(i).count(b"<f") for i in zf.infolist() if i.filename.startswith("xl/worksheets/"))


def parse_ref(text):
    m = re.fullmatch(r"(?:'((?:[^']|'')+)'|([^!]+))!\$?([A-Z]+)\$?(\d+)(?::\$?([A-Z]+)\$?(\d+))?", text)
    if not m:
        return None
    from openpyxl.utils import column_index_from_string as col
    sheet = (m.group(1) or "").replace("''", "'") or m.group(2)
    top, left = int(m.group(4)), col(m.group(3))
    bottom, right = (int(m.group(6)), col(m.group(5))) if m.group(5) else (top, left)
    return Named(sheet, top, left, bottom, right)


def read_book(path):
    """Sheet names, defined names, input tokens and constants, without loading the big sheets."""
    import openpyxl

    path = Path(path)
    if not path.is_file():
        raise XlgptError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            est = sum(i.file_size for i in zf.infolist() if i.filename.startswith("xl/worksheets/")) // BYTES_PER_CELL
        wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise XlgptError(f"{path}: not an .xlsx workbook ({e})")
    try:
        names = {}
        for name, dn in wb.defined_names.items():
            ref = parse_ref(dn.attr_text)
            if ref:
                names[name] = ref
        for needed in ("Logits", "Predictions", "TokenIds"):
            if needed not in names:
                raise XlgptError(f"{path}: not an xlgpt workbook (no defined name {needed})")
        values = {}
        for name, ref in names.items():
            if name in ("TokenIds", "Checkpoint", "WeightsSha256", "Prompt", "TokenizerCapacity"):
                ws = wb[ref.sheet]
                cells = [c.value for r in ws.iter_rows(min_row=ref.top, max_row=ref.bottom,
                                                       min_col=ref.left, max_col=ref.right) for c in r]
                values[name] = cells if name == "TokenIds" else cells[0]
        tokens = values.pop("TokenIds")
        if "LogitsInPrompt" in names:
            tokens = None  # computed by the sheet's tokenizer
        elif not all(isinstance(t, int) for t in tokens):
            raise XlgptError(f"{path}: the token cells must hold integer token ids")
        return BookInfo(path, wb.sheetnames, names, values, tokens, est)
    finally:
        wb.close()


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


def _result_sheet(book, wanted, engine):
    sheets = {book.names[n].sheet for n in wanted}
    if len(sheets) != 1:
        raise XlgptError(f"the results must sit on one sheet for the {engine} engine")
    return sheets.pop()


def _names_from_grid(book, wanted, grid):
    """The wanted names' values from a CSV grid of their sheet (NaN for errors and missing cells)."""
    out = {}
    for name in wanted:
        ref = book.names[name]
        out[name] = np.array([[_as_float(grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None)
                               for c in range(ref.left, ref.right + 1)] for r in range(ref.top, ref.bottom + 1)])
    return out


def libreoffice_values(book, wanted, timeout=3600):
    """Recalculate with headless LibreOffice (CSV export of the sheet holding the names) and read them."""
    sheet = _result_sheet(book, wanted, "LibreOffice")
    with _peak_memory() as stats:
        grid = soffice_csv([book.path], book.sheets.index(sheet) + 1, timeout)[0]
    return _names_from_grid(book, wanted, grid), stats


def find_ssconvert():
    exe = shutil.which("ssconvert")
    if not exe:
        raise XlgptError("Gnumeric is not installed (no 'ssconvert' on PATH); install it, e.g. "
                         "apt-get install --no-install-recommends gnumeric, or use another --engine")
    return exe


def ssconvert_csv(path, sheet, timeout=3600):
    """Recalculate a book with Gnumeric's ssconvert and return sheet `sheet` (its name) as a CSV grid.

    Raw values (full precision, not the cells' display format), C locale, its own process group
    (killed whole on timeout) and a temporary HOME, so nothing of the user's settings is read or written."""
    exe = find_ssconvert()
    with tempfile.TemporaryDirectory(prefix="xlgpt-gnumeric-") as tmp:
        tmp = Path(tmp)
        out = tmp / "out.csv"
        quoted = '"' + sheet.replace("\\", "\\\\").replace('"', '\\"') + '"'
        cmd = [exe, "--recalc", "--export-type=Gnumeric_stf:stf_assistant",
               f"--export-options=sheet={quoted} format=raw separator=, eol=unix",
               str(Path(path).resolve()), str(out)]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": str(tmp)}
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=tmp, start_new_session=True)
        try:
            log, _ = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
            raise XlgptError(f"Gnumeric did not finish within {timeout} s")
        finally:
            if run.poll() is None:  # interrupted (Ctrl-C): take the whole group down with us
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
        if run.returncode != 0 or not out.is_file():
            last = [line for line in (log or "").splitlines() if line.strip()][-1:]
            raise XlgptError(f"Gnumeric could not convert {Path(path).name}: "
                             f"{last[0] if last else f'exit status {run.returncode}'}")
        with open(out, newline="", encoding="utf-8") as f:
            return list(csv.reader(f))


def gnumeric_values(book, wanted, timeout=3600):
    """Recalculate with Gnumeric (ssconvert --recalc, CSV export of the sheet holding the names) and read them."""
    sheet = _result_sheet(book, wanted, "Gnumeric")
    with _peak_memory() as stats:
        grid = ssconvert_csv(book.path, sheet, timeout)
    return _names_from_grid(book, wanted, grid), stats


ENGINES = {"formulas": formulas_values, "libreoffice": libreoffice_values, "gnumeric": gnumeric_values}
