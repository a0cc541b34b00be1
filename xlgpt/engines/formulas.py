"""The `formulas` package (pure Python) as an engine: recalculate a whole book and read names or rectangles."""

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from xlgpt.engines.process import as_float, peak_memory
from xlgpt.package import XlgptError
from xlgpt.sheet.read import parse_ref

# What the `formulas` package can afford, from what its time and memory grow with (measured on this 2-core
# machine with the default book: 114k constants, 5.6k formulas, 0.5M array-formula cells; ~45 s CPU in all):
# - constant cells: ~20 µs each to read (openpyxl), less once handed over as blocks (sparse_model); a constant
#   the model holds alone costs ~0.1 ms and ~6 KB of memory;
# - formulas: ~2 ms each to parse, and ~3 ms more to compile one of a form not seen before (_template_key),
#   however many cells an array formula covers;
# - cells computed by array formulas: every function of the formula runs once per cell in Python
#   (~5-10 µs each; the tokenizer's 0.5M cells at ~40 functions a slot: ~20 s).
# All cells (the sheet XML's size / 12) was the old measure: it counts the labels and styles and misses the
# array formulas' cells, the bulk of the tokenizer's work. Each limit alone means several minutes.
FORMULAS_MAX_CELLS = 300_000  # constant cells (`eval --max-cells`)
FORMULAS_MAX_FORMULAS = 20_000
FORMULAS_MAX_ARRAY_CELLS = 2_000_000


def check_formulas_size(
    book, max_cells=FORMULAS_MAX_CELLS, max_formulas=FORMULAS_MAX_FORMULAS, max_array_cells=FORMULAS_MAX_ARRAY_CELLS
):
    """Refuse a book the `formulas` engine would take too long on (see the limits above)."""
    hint = " (or build with a smaller --capacity)" if book.typed else ""
    if book.est_cells > 10 * max_cells:  # clearly too large: say so without reading every sheet
        raise XlgptError(
            f"{book.path.name}: about {book.est_cells:,} cells is too large for the formulas engine; "
            f"use --engine ironcalc or libreoffice{hint}"
        )
    size = book.cell_counts
    if size.constants > max_cells:
        raise XlgptError(
            f"{book.path.name}: {size.constants:,} constant cells is too large for the formulas engine "
            f"(limit {max_cells:,}); use --engine ironcalc or libreoffice"
        )
    if size.formulas > max_formulas:
        raise XlgptError(
            f"{book.path.name}: {size.formulas:,} formulas would take the formulas engine too long (limit "
            f"{max_formulas:,}, ~10 ms each); use --engine ironcalc or libreoffice{hint}"
        )
    if size.array_cells > max_array_cells:
        raise XlgptError(
            f"{book.path.name}: array formulas over {size.array_cells:,} cells would take the formulas "
            f"engine too long (limit {max_array_cells:,}); use --engine ironcalc or libreoffice{hint}"
        )


def check_formulas_precision(book):
    """Refuse a book whose constants the `formulas` engine would change: it rounds every number it reads to
    15 decimal places (2.5E-16 reads as 0), and Adam's second moments after a few steps are that small."""
    for name, grid in ((book.training or {}).get("moments") or {}).items():
        small = [v for row in grid for v in row if v and abs(v) < 1e-9]
        if small:
            raise XlgptError(
                f"{book.path.name}: {name} holds numbers as small as {min(map(abs, small)):.2g}, which the "
                f"formulas engine rounds (to 15 decimal places); use --engine libreoffice or gnumeric"
            )


def quiet():
    """The `formulas` package draws progress bars on stderr: not ours to show."""
    return contextlib.redirect_stderr(io.StringIO())


def check_formulas(book, max_cells=FORMULAS_MAX_CELLS):
    check_formulas_size(book, max_cells)
    check_formulas_precision(book)


def formulas_values(book, wanted, max_cells=FORMULAS_MAX_CELLS, more=None):
    """Recalculate with the `formulas` package and read the wanted defined names (and `more`'s Rects)."""
    check_formulas(book, max_cells)
    # the package names cells '[file name]SHEET'!A1 and cannot parse a file name holding [ ] or ': it reads
    # the book through a link of a plain name
    with quiet(), tempfile.TemporaryDirectory(prefix="xlgpt-formulas-") as tmp:
        link = Path(tmp) / "book.xlsx"
        os.symlink(Path(book.path).resolve(), link)
        with peak_memory() as stats:
            model = sparse_model().loads(str(link)).finish()
            solution = model.calculate()
    results = {k.upper(): v for k, v in solution.items()}
    out = {}
    for name in wanted:
        key = f"'[{link.name}]'!{name}".upper()
        if key not in results:
            raise XlgptError(f"{book.path.name}: the formulas engine computed no value for {name}")
        out[name] = np.vectorize(as_float, otypes=[float])(np.asarray(results[key].value, dtype=object))
    if more is not None:
        stats["more"] = _solution_rects(results, more(out))
    return out, stats


def _solution_rects(results, rects):
    """Rects' values from a `formulas` solution ({"'[BOOK]SHEET'!A1:B2", upper case: value}): each cell from
    the computed cell or range that holds it (an array formula's result is stored under its range only)."""

    if not rects:
        return []
    to_float = np.vectorize(lambda v: as_float(_formulas_value(v)), otypes=[float])
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
                grid[top - r.top : bottom - r.top + 1, left - r.left : right - r.left + 1] = to_float(
                    computed[top - area.top : bottom - area.top + 1, left - area.left : right - area.left + 1]
                )
    return out


def sparse_model():
    """formulas.ExcelModel that compiles only the cells the file holds (it overrides the package's private
    methods: tested with formulas 1.3.4, and pyproject.toml pins >=1.3.4,<1.4). The package otherwise walks (and
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
            ctx = sh.combine_dicts(
                context or {},
                sh.selector(("filename", "sheet"), r, allow_miss=True),
                base={"cr": r["r1"], "cc": r["n1"]},
            )
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
            cell.func = wrap_cell_func(
                _SharedFunction(func, inputs, out if "error" in builder.match else f"={out}"), cell._args
            )
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
            self._compiled.update(
                (ctx["excel"], ctx["sheet"], c.coordinate) for block in blocks for row in block for c in row
            )
            cells = [self.compile_cell(c, ctx, references, formula_references) for c in held]
            for block in blocks:  # the package rounds a number it reads to 15 decimal places: so do the blocks
                grid = np.array(
                    [[round(c.value, 15) if isinstance(c.value, float) else c.value for c in row] for row in block],
                    dtype=object,
                )
                cells.append(
                    Cell(f"{block[0][0].coordinate}:{block[-1][-1].coordinate}", grid, context=ctx, check_formula=False)
                )
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
            if _cached_in_array_formula(cell.range.ranges[0], formula_ranges):
                return None
            return super().add_cell(cell, context, ())

    return SparseModel()


def package_model():
    """formulas.ExcelModel as the package has it (one node per cell: what `generate --engine formulas` sets
    inputs on), without the cached results of array formulas (see _cached_in_array_formula)."""
    from formulas.excel import ExcelModel

    class PackageModel(ExcelModel):
        def add_cell(self, cell, context, formula_ranges):
            if cell is not None and _cached_in_array_formula(cell.range.ranges[0], formula_ranges):
                return None
            return super().add_cell(cell, context, formula_ranges)

    return PackageModel()


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
        number = (
            getattr(c, "data_type", None) == "n"
            and type(c.value) in (int, float)
            and not any(r1 <= c.row <= r2 and c1 <= c.column <= c2 for r1, r2, c1, c2 in bounds)
        )
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


def _cached_in_array_formula(rng, formula_ranges):
    """Is a cell one of the cached results of an array formula: a single cell inside one of a sheet's array
    formula regions (given as formulas Ranges), other than a one-cell array formula itself? Such a cell holds
    what the formula computed when the book was saved, and the array formula computes it again; it must not
    become a node of its own. The package drops it only when it holds a value: a cached error (#DIV/0!, written
    t="e") parses as a formula, an error literal whose value is EMPTY, and became a constant node that the
    cells reading it saw instead of the array's result (the sampler's weights at Temperature 0 are #DIV/0!, so a
    book evaluated at 0.7 kept them and sampled inf)."""
    key = id(formula_ranges)
    if key not in _ARRAY_BOUNDS or _ARRAY_BOUNDS[key][0] is not formula_ranges:
        _ARRAY_BOUNDS[key] = (
            formula_ranges,
            [(int(r["r1"]), int(r["r2"]), r["n1"], r["n2"]) for f in formula_ranges for r in f.ranges],
        )
    row, col = int(rng["r1"]), rng["n1"]
    if (int(rng["r2"]), rng["n2"]) != (row, col):  # a range: an array formula's own node
        return False
    return any(
        r1 <= row <= r2 and c1 <= col <= c2 and (r1, r2, c1, c2) != (row, row, col, col)
        for r1, r2, c1, c2 in _ARRAY_BOUNDS[key][1]
    )


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


def formulas_rect(values, book, rect):
    """A Rect's values from a `formulas` solution: an array formula's result is stored under its whole
    range only, a plain formula's under its cell."""
    key = lambda r: f"'[{book.upper()}]{rect.sheet.upper()}'!{r.ref(rect.sheet, absolute=False)}"
    whole = values.get(key(rect))
    if whole is not None:
        grid = np.asarray(whole.value, dtype=object)
        if grid.shape == (rect.height, rect.width):
            return [[_formulas_value(v) for v in row] for row in grid]
    return [
        [_formulas_value(getattr(values.get(key(rect.cell(i, j))), "value", None)) for j in range(rect.width)]
        for i in range(rect.height)
    ]
