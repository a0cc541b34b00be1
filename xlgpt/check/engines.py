"""Spreadsheet engines that recalculate a written workbook: the `formulas` package, LibreOffice and Gnumeric.

Each returns the values of the workbook's defined names as 2-D float arrays (NaN where a cell holds an
error), so the checks in verify.py never depend on how an engine stores its results. Given `more`, a function
of those values giving a list of layout.Rects (eval's search for the first stage that differs), an engine
also reads those cells of the recalculated book before it closes it: stats["more"], one 2-D float array per
Rect (LibreOffice through its CSV export reads only the one sheet of the names, and so no `more`).
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import XlgptError

# What the `formulas` package can afford, from what its time and memory grow with (measured on this 2-core
# machine with the default book: 114k constants, 5.6k formulas, 0.5M array-formula cells; ~45 s CPU in all):
# - constant cells: ~20 µs each to read (openpyxl), less once handed over as blocks (_sparse_model); a constant
#   the model holds alone costs ~0.1 ms and ~6 KB of memory;
# - formulas: ~2 ms each to parse, and ~3 ms more to compile one of a form not seen before (_template_key),
#   however many cells an array formula covers;
# - cells computed by array formulas: every function of the formula runs once per cell in Python
#   (~5-10 µs each; the tokenizer's 0.5M cells at ~40 functions a slot: ~20 s).
# All cells (the sheet XML's size / 12) was the old measure: it counts the labels and styles and misses the
# array formulas' cells, the bulk of the tokenizer's work. Each limit alone means several minutes.
FORMULAS_MAX_CELLS = 300_000          # constant cells (`eval --max-cells`)
FORMULAS_MAX_FORMULAS = 20_000
FORMULAS_MAX_ARRAY_CELLS = 2_000_000


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


def check_formulas_size(book, max_cells=FORMULAS_MAX_CELLS, max_formulas=FORMULAS_MAX_FORMULAS,
                        max_array_cells=FORMULAS_MAX_ARRAY_CELLS):
    """Refuse a book the `formulas` engine would take too long on (see the limits above)."""
    hint = " (or build with a smaller --capacity)" if book.typed else ""
    if book.est_cells > 10 * max_cells:  # clearly too large: say so without reading every sheet
        raise XlgptError(f"{book.path.name}: about {book.est_cells:,} cells is too large for the formulas engine; "
                         f"use --engine libreoffice{hint}")
    size = book.cell_counts
    if size.constants > max_cells:
        raise XlgptError(f"{book.path.name}: {size.constants:,} constant cells is too large for the formulas engine "
                         f"(limit {max_cells:,}); use --engine libreoffice")
    if size.formulas > max_formulas:
        raise XlgptError(f"{book.path.name}: {size.formulas:,} formulas would take the formulas engine too long (limit "
                         f"{max_formulas:,}, ~10 ms each); use --engine libreoffice{hint}")
    if size.array_cells > max_array_cells:
        raise XlgptError(f"{book.path.name}: array formulas over {size.array_cells:,} cells would take the formulas "
                         f"engine too long (limit {max_array_cells:,}); use --engine libreoffice{hint}")


def check_formulas_precision(book):
    """Refuse a book whose constants the `formulas` engine would change: it rounds every number it reads to
    15 decimal places (2.5E-16 reads as 0), and Adam's second moments after a few steps are that small."""
    for name, grid in ((book.training or {}).get("moments") or {}).items():
        small = [v for row in grid for v in row if v and abs(v) < 1e-9]
        if small:
            raise XlgptError(f"{book.path.name}: {name} holds numbers as small as {min(map(abs, small)):.2g}, which the "
                             f"formulas engine rounds (to 15 decimal places); use --engine libreoffice or gnumeric")


def formulas_values(book, wanted, max_cells=FORMULAS_MAX_CELLS, more=None):
    """Recalculate with the `formulas` package and read the wanted defined names (and `more`'s Rects)."""
    check_formulas_size(book, max_cells)
    check_formulas_precision(book)
    # the package names cells '[file name]SHEET'!A1 and cannot parse a file name holding [ ] or ': it reads
    # the book through a link of a plain name
    with contextlib.redirect_stderr(io.StringIO()), tempfile.TemporaryDirectory(prefix="xlgpt-formulas-") as tmp:
        link = Path(tmp) / "book.xlsx"
        os.symlink(Path(book.path).resolve(), link)
        with _peak_memory() as stats:
            model = _sparse_model().loads(str(link)).finish()
            solution = model.calculate()
    results = {k.upper(): v for k, v in solution.items()}
    out = {}
    for name in wanted:
        key = f"'[{link.name}]'!{name}".upper()
        if key not in results:
            raise XlgptError(f"{book.path.name}: the formulas engine computed no value for {name}")
        out[name] = np.vectorize(_as_float, otypes=[float])(np.asarray(results[key].value, dtype=object))
    if more is not None:
        stats["more"] = _solution_rects(results, more(out))
    return out, stats


def _solution_rects(results, rects):
    """Rects' values from a `formulas` solution ({"'[BOOK]SHEET'!A1:B2", upper case: value}): each cell from
    the computed cell or range that holds it (an array formula's result is stored under its range only)."""
    from ..contract import parse_ref

    if not rects:
        return []
    as_float = np.vectorize(lambda v: _as_float(_formulas_value(v)), otypes=[float])
    out = [np.full((r.height, r.width), np.nan) for r in rects]
    on_sheet = {}
    for r, grid in zip(rects, out):
        on_sheet.setdefault(r.sheet.upper(), []).append((r, grid))
    for key, value in results.items():
        area = parse_ref("'" + key.split("]", 1)[-1]) if key.startswith("'[") else None  # sheet in upper case
        if area is None or area.sheet not in on_sheet:
            continue
        computed = np.asarray(getattr(value, "value", value), dtype=object)
        if computed.size != area.height * area.width:
            continue
        computed = computed.reshape(area.height, area.width)
        for r, grid in on_sheet[area.sheet]:
            top, bottom = max(r.top, area.top), min(r.bottom, area.bottom)
            left, right = max(r.left, area.left), min(r.right, area.right)
            if top <= bottom and left <= right:  # the overlap, in each one's own coordinates
                grid[top - r.top:bottom - r.top + 1, left - r.left:right - r.left + 1] = as_float(
                    computed[top - area.top:bottom - area.top + 1, left - area.left:right - area.left + 1])
    return out


def find_soffice():
    exe = shutil.which("soffice") or shutil.which("libreoffice")
    if not exe:
        raise XlgptError("LibreOffice is not installed (no 'soffice' on PATH); install it, e.g. "
                         "apt-get install libreoffice-calc-nogui, or use --engine formulas")
    return exe


# Engines run in the C locale: LibreOffice's CSV export writes numbers with the decimal separator of the
# locale it runs in (LC_ALL=de_DE.UTF-8 gives "1,5", read back as NaN), whether or not the system has that
# locale installed; the formulas engine and the UNO bridge pass numbers as doubles.
C_LOCALE = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "LANGUAGE": "C"}


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


def _run_group(cmd, timeout, what, **popen):
    """Run `cmd` in its own process group (soffice forks soffice.bin) and kill the whole group when it
    times out or when this process leaves early (Ctrl-C, SIGTERM turned into SystemExit): nothing is left
    running. Returns stdout, stderr and the exit status."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise XlgptError(f"{what} did not finish within {timeout} s")
    finally:
        try:  # soffice.bin may outlive its launcher: take the group down in every case
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait()
    return _Run(proc.returncode, out, err)


# The temporary profile's settings: recalculate every formula on load. A book set to manual calculation turns
# LibreOffice's automatic calculation off, and without this its cells would be exported half computed.
ALWAYS_RECALCULATE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
    'xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    + "".join(f'<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="{key}" oor:op="fuse">'
              f'<value>0</value></prop></item>' for key in ("OOXMLRecalcMode", "ODFRecalcMode"))
    + "</oor:items>\n")


def soffice_csv(paths, sheet_index, timeout=3600):
    """Recalculate books in ONE headless LibreOffice run (one start-up, its own temporary profile) and
    return each book's sheet `sheet_index` (1-based) as a CSV grid: a list of rows of strings."""
    exe = find_soffice()
    with tempfile.TemporaryDirectory(prefix="xlgpt-lo-") as tmp:
        tmp = Path(tmp)
        (tmp / "profile" / "user").mkdir(parents=True)
        (tmp / "profile" / "user" / "registrymodifications.xcu").write_text(ALWAYS_RECALCULATE)
        sources = []
        for i, path in enumerate(paths):
            sources.append(tmp / f"book{i}.xlsx")
            os.symlink(Path(path).resolve(), sources[-1])
        opts = f"44,34,76,1,,0,false,true,false,false,false,{sheet_index}"
        cmd = [exe, f"-env:UserInstallation=file://{tmp / 'profile'}", "--headless", "--calc",
               "--convert-to", f"csv:Text - txt - csv (StarCalc):{opts}", *map(str, sources), "--outdir", str(tmp / "out")]
        run = _run_group(cmd, timeout, "LibreOffice", cwd=tmp,
                         # its scratch files (lu*.tmp) go into our directory, removed even if soffice is killed
                         env={**os.environ, **C_LOCALE, "SAL_ENABLE_FILE_LOCKING": "0", "TMPDIR": str(tmp)})
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


def uno_values(book, wanted, timeout=3600, more=None):
    """Recalculate with LibreOffice through its UNO bridge (a LibreOfficeSession: load, which calculates
    every formula, then read the names, on any sheets; and `more`'s Rects, as "Sheet.A1:B2" ranges)."""
    from .session import LibreOfficeSession

    t0 = time.perf_counter()
    with LibreOfficeSession(timeout=timeout) as lo:
        opened = lo.open(book.path)
        values = opened.read(wanted)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stats = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": max(round(own), lo.peak_rss_mb())}
        if more is not None:
            stats["more"] = read_ranges(opened, more(values))
    return values, stats


def read_ranges(opened, rects):
    """Rects of a book open in a LibreOfficeSession, in one request: a 2-D float array each."""
    keys = [f"{r.sheet}.{r.corners()}" for r in rects]
    values = opened.read(dict.fromkeys(keys)) if keys else {}
    return [values[k] for k in keys]


def uno_available():
    from .session import system_python

    try:
        system_python()
        return True
    except XlgptError:
        return False


def libreoffice_values(book, wanted, timeout=3600, via=None, more=None):
    """Recalculate with headless LibreOffice and read the names: through the UNO bridge when it is installed
    (or the names span several sheets), else by a CSV export of the one sheet holding them (without `more`).
    via: "uno" or "csv" to choose."""
    sheets = {book.names[n].sheet for n in wanted}
    if via is None:
        via = "uno" if len(sheets) != 1 or uno_available() else "csv"
    if via == "uno":
        return uno_values(book, wanted, timeout, more)
    if len(sheets) != 1:
        raise XlgptError("the results must sit on one sheet for LibreOffice's CSV export")
    with _peak_memory() as stats:
        grid = soffice_csv([book.path], book.sheets.index(sheets.pop()) + 1, timeout)[0]
    out = {}
    for name in wanted:
        cell = lambda r, c: _as_float(grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None)
        out[name] = np.array(book.names[name].read(cell))
    return out, stats


def find_ssconvert():
    exe = shutil.which("ssconvert")
    if not exe:
        raise XlgptError("Gnumeric is not installed (no 'ssconvert' on PATH); install it, e.g. "
                         "apt-get install --no-install-recommends gnumeric, or use another --engine")
    return exe


def ssconvert_csv(path, sheets, order, timeout=3600):
    """Recalculate a book with Gnumeric's ssconvert and return the named sheets as CSV grids {name: grid}
    (`order`: the book's sheet names, in order)."""
    with ssconvert_export(path, order, timeout) as grid:
        return {sheet: grid(sheet) for sheet in sheets}


@contextlib.contextmanager
def ssconvert_export(path, order, timeout=3600):
    """Recalculate a book with Gnumeric's ssconvert; yields grid(sheet name): that sheet as a CSV grid (a list
    of rows of strings), read while the export lasts (`order`: the book's sheet names, in order).

    Raw values (full precision, not the cells' display format), C locale, its own process group (killed
    whole on timeout or interruption) and a temporary HOME, so nothing of the user's settings is read or
    written. Every sheet is exported in one run (a run recalculates the whole book); only those asked for
    are read."""
    exe = find_ssconvert()
    with tempfile.TemporaryDirectory(prefix="xlgpt-gnumeric-") as tmp:
        tmp = Path(tmp)
        cmd = [exe, "--recalc", "-S", "--export-type=Gnumeric_stf:stf_assistant",
               "--export-options=format=raw separator=, eol=unix", str(Path(path).resolve()), str(tmp / "out-%n.csv")]
        env = {**os.environ, **C_LOCALE, "HOME": str(tmp)}
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
        def grid(sheet):
            out = tmp / f"out-{order.index(sheet)}.csv"
            if run.returncode != 0 or not out.is_file():
                last = [line for line in (log or "").splitlines() if line.strip()][-1:]
                raise XlgptError(f"Gnumeric could not convert {Path(path).name}: "
                                 f"{last[0] if last else f'exit status {run.returncode}'}")
            with open(out, newline="", encoding="utf-8") as f:
                return list(csv.reader(f))
        yield grid


def gnumeric_values(book, wanted, timeout=3600, more=None):
    """Recalculate with Gnumeric (ssconvert --recalc, a CSV export per sheet) and read the names (and
    `more`'s Rects, from the same export)."""
    grids = {}

    def read(rect):
        if rect.sheet not in grids:
            grids[rect.sheet] = sheet_grid(rect.sheet)
        grid = grids[rect.sheet]
        cell = lambda r, c: _as_float(grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None)
        return np.array(rect.read(cell), dtype=float)
    with contextlib.ExitStack() as export:
        with _peak_memory() as stats:
            sheet_grid = export.enter_context(ssconvert_export(book.path, book.sheets, timeout))
            out = {name: read(book.names[name]) for name in wanted}
        if more is not None:  # from the same export, still on disk
            stats["more"] = [read(rect) for rect in more(out)]
    return out, stats


ENGINES = {"formulas": formulas_values, "libreoffice": libreoffice_values, "gnumeric": gnumeric_values}


# --- reading any rectangles of recalculated books -------------------------------------------------------


def _sparse_model():
    """formulas.ExcelModel that compiles only the cells the file holds: the package otherwise walks (and
    openpyxl creates) every cell of a sheet's bounding box, empty or not, at ~0.01-0.2 ms each, while an
    array formula over a row fills it from its first cell alone. It also tells whether a constant lies under
    an array formula (whose cached values are then ignored) by comparing row and column bounds, where the
    package subtracts Ranges for every (cell, array formula) pair of a sheet: quadratic, and most of the
    load time of a sheet of a thousand array formulas. What gets compiled, and how, is unchanged.

    Three more savings, none changing what any formula computes:
    - a sheet's numeric constants are handed to the package as rectangular blocks (each one data node holding
      its grid, as the package holds an array formula's result) instead of one node per cell: a weights tab's
      ~30k cells cost ~0.1 ms each to load, to assemble into the ranges formulas read and to set at every
      calculation; a range over a block is assembled from it as from an array formula's result;
    - a cell is compiled once: the package's `complete` compiles again every cell of a range a formula reads
      when the range is not already a node (e.g. a part of an array formula's result), to throw the copy away;
    - formulas that differ only in the cells they read share one compiled function (see _template_key): the
      book writes one formula per position column, and compiling (not parsing) is most of a formula's ~3 ms."""
    import collections

    import schedula as sh
    from formulas.cell import CELL, Cell, wrap_cell_func
    from formulas.excel import ExcelModel
    from formulas.ranges import Ranges

    class SparseModel(ExcelModel):
        def __init__(self):
            super().__init__()
            self._compiled = set()  # (book, sheet, cell) compiled or held in a block
            self._templates = {}  # _template_key -> (the input names it was compiled with, compiled function)

        def _compile_cell(self, crd, val, context, check_formula, references):
            parser = Cell.parser
            if not (check_formula and isinstance(val, str) and parser.is_formula(val)):
                return ExcelModel._compile_cell(crd, val, context, check_formula, references)
            cell = Cell(crd, None, context=context)  # what Cell(crd, val, ...) does, keeping the parsed tokens
            r = cell.range.ranges[0]
            ctx = sh.combine_dicts(context or {}, sh.selector(("filename", "sheet"), r, allow_miss=True),
                                   base={"cr": r["r1"], "cc": r["n1"]})
            tokens, cell.builder = parser.ast(val, context=ctx)
            key, names = _template_key(tokens, cell.builder)
            if key is not None and CELL in cell.builder.dsp.data_nodes:  # reads its own position (ROW())
                key = None
            template = self._templates.get(key) if key is not None else None
            if template is None:
                cell.compile(references=references, context=context)
                if key is not None:
                    self._templates[key] = (names, cell.func.func)
                return cell
            their_names, func = template
            rename = dict(zip(their_names, names))
            inputs = collections.OrderedDict()
            for k, rng in func.inputs.items():
                if k in rename and rename[k] != k:  # as AstBuilder.compile makes its inputs' Ranges
                    inputs[rename[k]] = Ranges().push(rename[k], context=context) if isinstance(rng, Ranges) else rng
                else:
                    inputs[k] = rng
            builder = cell.builder
            out = builder.get_node_id(builder[-1])
            cell.func = wrap_cell_func(_SharedFunction(func, inputs, out if "error" in builder.match else f"={out}"),
                                       cell._args)
            cell.update_inputs(references=references)
            cell.builder = None
            return cell

        def push(self, worksheet, context):
            worksheet, context = self.add_sheet(worksheet, context)
            references, formula_references = self.references, self.formula_references(context)
            formula_ranges = self.formula_ranges(context)
            ctx = {"external_links": self.external_links(context), **context}
            held = [worksheet._cells[k] for k in sorted(worksheet._cells)]  # (row, column) order, as iter_rows
            blocks, held = _constant_blocks(held, formula_ranges)
            self._compiled.update((ctx["excel"], ctx["sheet"], c.coordinate) for block in blocks for row in block
                                  for c in row)
            cells = [self.compile_cell(c, ctx, references, formula_references) for c in held]
            for block in blocks:  # the package rounds a number it reads to 15 decimal places: so do the blocks
                grid = np.array([[round(c.value, 15) if isinstance(c.value, float) else c.value for c in row]
                                 for row in block], dtype=object)
                cells.append(Cell(f"{block[0][0].coordinate}:{block[-1][-1].coordinate}", grid, context=ctx,
                                  check_formula=False))
            for cell in cells:
                self.add_cell(sh.await_result(cell), ctx, formula_ranges)
            return self

        def compile_cell(self, cell, context, references, formula_references):
            if getattr(cell, "value", None) is None:
                return None
            key = (context.get("excel"), context.get("sheet"), cell.coordinate)
            if key in self._compiled:  # already a node, or refused as one (the same answer again)
                return None
            self._compiled.add(key)
            return super().compile_cell(cell, context, references, formula_references)

        def add_cell(self, cell, context, formula_ranges):
            if cell is None or cell.output in self.cells:
                return None
            if cell.value is not sh.EMPTY and _under_array_formula(cell.range.ranges[0], formula_ranges):
                return None
            return super().add_cell(cell, context, ())
    return SparseModel()


class _SharedFunction:
    """A compiled formula called with another cell's inputs: the same function of the same arguments, in the
    same order (the `formulas` CellWrapper passes them by position, as Ranges of this cell's references)."""

    def __init__(self, compiled, inputs, name):
        # the package's CellWrapper copies these attributes (functools.update_wrapper) and reads `inputs`
        # (what to pass), `dsp` and `outputs` (its cycle check) from itself
        self.compiled, self.inputs, self.__name__ = compiled, inputs, name
        self.dsp, self.outputs = compiled.dsp, compiled.outputs

    def __call__(self, *args, **kwargs):
        return self.compiled(*args, **kwargs)


def _template_key(tokens, builder):
    """What a parsed formula computes apart from the cells it reads: its tokens, each reference to cells
    replaced by the index of its first occurrence and its shape (defined names are kept, as the package
    resolves them while compiling). Two formulas with the same key compile to the same function of their
    inputs. Returns (key, the references' node names in order), or (None, None) when in doubt."""
    from formulas.tokens.operand import Range

    key, names, seen = ["error" in builder.match], [], {}
    for token in tokens:
        attr = getattr(token, "attr", {})
        if isinstance(token, Range) and not attr.get("is_reference"):
            try:
                shape = (int(attr["r2"]) - int(attr["r1"]), attr["n2"] - attr["n1"])
            except (KeyError, TypeError, ValueError):
                return None, None
            name = token.node_id
            if name not in seen:
                seen[name] = len(seen)
                names.append(name)
            key.append(("range", seen[name], shape, attr.get("anchor")))
        else:
            key.append((type(token).__name__, token.name))
    return tuple(key), names


def _constant_blocks(cells, formula_ranges, min_cells=2):
    """Split a sheet's cells (in (row, column) order) into rectangles of numeric constants (each a list of
    rows of cells: the runs of adjacent numbers in a row, stacked while the rows below hold the same run)
    and the other cells. Constants under an array formula (its cached values) stay with the other cells,
    which the model refuses as before."""
    bounds = [(int(r["r1"]), int(r["r2"]), r["n1"], r["n2"]) for f in formula_ranges for r in f.ranges]
    runs, rest, run = {}, [], []  # runs: (row, first column, last column) -> cells

    def close():
        if run:
            runs[(run[0].row, run[0].column, run[-1].column)] = list(run)
            run.clear()
    for c in cells:
        number = (getattr(c, "data_type", None) == "n" and type(c.value) in (int, float)
                  and not any(r1 <= c.row <= r2 and c1 <= c.column <= c2 for r1, r2, c1, c2 in bounds))
        if run and not (number and c.row == run[-1].row and c.column == run[-1].column + 1):
            close()
        if number:
            run.append(c)
        else:
            rest.append(c)
    close()
    blocks = []
    for row, first, last in sorted(runs):
        if runs[(row, first, last)] is None:  # stacked under a run above
            continue
        block, below = [runs[(row, first, last)]], row + 1
        while runs.get((below, first, last)):
            block.append(runs[(below, first, last)])
            runs[(below, first, last)] = None
            below += 1
        if len(block) * len(block[0]) >= min_cells:
            blocks.append(block)
        else:
            rest.extend(c for r in block for c in r)
    return blocks, rest


_ARRAY_BOUNDS = {}


def _under_array_formula(rng, formula_ranges):
    """Does a one-cell range lie inside one of a sheet's array formulas (given as formulas Ranges)?"""
    key = id(formula_ranges)
    if key not in _ARRAY_BOUNDS or _ARRAY_BOUNDS[key][0] is not formula_ranges:
        _ARRAY_BOUNDS[key] = (formula_ranges, [(int(r["r1"]), int(r["r2"]), r["n1"], r["n2"])
                                               for f in formula_ranges for r in f.ranges])
    row, col = int(rng["r1"]), rng["n1"]
    return any(r1 <= row <= r2 and c1 <= col <= c2 for r1, r2, c1, c2 in _ARRAY_BOUNDS[key][1])


def _formulas_value(v):
    v = np.asarray(v, dtype=object).ravel()[0] if v is not None else None
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).upper()
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)  # an XlError such as #VALUE!


def _formulas_rect(values, book, rect):
    """A Rect's values from a `formulas` solution: an array formula's result is stored under its whole
    range only, a plain formula's under its cell."""
    key = lambda r: f"'[{book.upper()}]{rect.sheet.upper()}'!{r.ref(rect.sheet, absolute=False)}"
    whole = values.get(key(rect))
    if whole is not None:
        grid = np.asarray(whole.value, dtype=object)
        if grid.shape == (rect.height, rect.width):
            return [[_formulas_value(v) for v in row] for row in grid]
    return [[_formulas_value(getattr(values.get(key(rect.cell(i, j))), "value", None)) for j in range(rect.width)]
            for i in range(rect.height)]


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
            with contextlib.redirect_stderr(io.StringIO()):  # progress bars
                refs = [f"'[{path}]{r.sheet.upper()}'!{r.ref(r.sheet, absolute=False)}" for r in rects]
                solution = _sparse_model().from_ranges(*refs).finish().calculate()
            values = {k.upper(): v for k, v in solution.items()}
            out.append([_formulas_rect(values, path.name, r) for r in rects])
        return out
    if engine not in ("libreoffice", "gnumeric"):
        raise XlgptError(f"unknown engine {engine!r} (libreoffice, gnumeric or formulas)")
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
        v = grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None
        if v in (None, ""):
            return None
        try:
            return float(v)
        except ValueError:
            return v
    return [[x.read(lambda r, c, k=k: cell(grids[k], r, c)) for x in rects] for k, (_, rects) in enumerate(books)]


def _sheet_names(path):
    import openpyxl
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return wb.sheetnames
    finally:
        wb.close()


# --- what a tokenizer book shows ---------------------------------------------------------------------------


@dataclass
class SheetResult:
    """What a recalculated sheet shows for one prompt."""
    status: str
    count: object   # an int when the status is "ok", else ""
    ids: list       # the token ids shown, up to the first empty cell

    @property
    def ok(self):
        return self.status == "ok"


@dataclass(frozen=True)
class Block:
    """Where one prompt's results sit: status, count and the row of token-id cells (one sheet)."""
    status: object
    count: object
    ids: object


def book_blocks(path):
    """The Blocks of a tokenizer book, from its defined names (one for a single-prompt book, else one per
    numbered prompt of a batch book)."""
    import openpyxl

    from ..contract import SHEET_TOKEN_COUNT, SHEET_TOKEN_IDS, TOKENIZER_STATUS, numbered, read_names
    try:
        wb = openpyxl.load_workbook(path, read_only=True)
    except Exception as e:
        raise XlgptError(f"{path}: not an .xlsx workbook ({e})")
    try:
        names = read_names(wb)
    finally:
        wb.close()
    outputs = (TOKENIZER_STATUS, SHEET_TOKEN_COUNT, SHEET_TOKEN_IDS)
    keys = [lambda n: n] if SHEET_TOKEN_IDS in names else [
        lambda n, i=i: numbered(n, i) for i in range(1, 1 + sum(bool(re.fullmatch(SHEET_TOKEN_IDS + r"_\d+", n))
                                                              for n in names))]
    blocks = []
    for name in keys or [lambda n: n]:
        missing = [name(n) for n in outputs if name(n) not in names]
        if missing:
            raise XlgptError(f"{path}: not a tokenizer workbook (no defined name {missing[0]})")
        blocks.append(Block(*(names[name(n)] for n in outputs)))
    return blocks


def _result(status, count, ids):
    status, count = status[0][0], count[0][0]
    shown = []
    for v in ids[0]:
        if v in (None, ""):
            break
        try:
            shown.append(int(float(v)))
        except (TypeError, ValueError):
            shown.append(str(v))  # an error value: shown as such, never as a token id
    try:
        count = int(float(count))
    except (TypeError, ValueError):
        count = "" if count is None else count
    return SheetResult("" if status is None else str(status), count, shown)


def evaluate_books(books, engine="libreoffice", timeout=3600):
    """Recalculate tokenizer books and read what they show: `books` is a list of paths; returns one list
    of SheetResult (one per prompt) per book."""
    blocks = [book_blocks(p) for p in books]
    values = read_rects([(p, [r for b in bl for r in (b.status, b.count, b.ids)]) for p, bl in zip(books, blocks)],
                        engine, timeout)
    return [[_result(*v[3 * i:3 * i + 3]) for i in range(len(bl))] for v, bl in zip(values, blocks)]


def evaluate_tokens(path, engine="libreoffice", timeout=3600):
    """The token ids a single-prompt book computes with `engine`; XlgptError with the sheet's own
    message when its status is not "ok"."""
    result = evaluate_books([path], engine, timeout)[0][0]
    if not result.ok:
        raise XlgptError(f"{Path(path).name}: the sheet says: {result.status}")
    return result.ids


def tokenize_with_sheets(tok, texts, engine="libreoffice", directory=None, per_book=40):
    """Tokenize many texts with the sheet itself (capacity sized to each text): batch books of `per_book`
    prompts, recalculated by `engine` (one LibreOffice run for all of them). One SheetResult per text."""
    from ..tokenizer.tabs import write_batch_book
    texts = list(texts)
    with tempfile.TemporaryDirectory(prefix="xlgpt-tok-") as tmp:
        directory = Path(directory or tmp)
        books = [write_batch_book(directory / f"tokenizer-batch-{i // per_book}.xlsx", tok, texts[i:i + per_book])
                 for i in range(0, len(texts), per_book)]
        return [r for rs in evaluate_books(books, engine) for r in rs]
