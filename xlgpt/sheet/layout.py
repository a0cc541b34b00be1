"""Where every cell goes: one rectangle type, tabs and their order, frozen header rows, blocks allocated
top to bottom, references rendered relative to the tab being written. Nothing else in xlgpt does cell
arithmetic: ops and tokenizer tabs ask a Tab for blocks and rows, and read cells through Rect.

Every tab reads the same way: row 1 its title, then frozen header rows (positions, token ids, ...), then
labelled blocks. Column A holds row labels, B row indices or notes, and data starts at column C.
"""

import collections
import contextlib
import functools
import textwrap
from dataclasses import dataclass

import numpy as np

from xlgpt.decimals import decimal_values
from xlgpt.sheet.cells import (
    ArrayFormula,
    Cells,
    Chart,
    Formula,
    Numbers,
    RegionFormula,
    SharedFormula,
    Sheet,
    cell_name,
    column_letter,
    quote_sheet,
)
from xlgpt.sheet.styles import BOLD, IDS, INPUT, PADDING, TITLE, when

LABEL_COL, NOTE_COL, FIRST_COL = 1, 2, 3
TITLE_ROW, HEADER_ROW = 1, 2
# Tab groups, in the order the tabs appear: the data flows left to right through the book.
GROUPS = ("guide", "prompt", "tokenizer", "model", "interpretability", "training", "weights", "optimizer", "tables")


@dataclass(frozen=True)
class Rect:
    """A rectangle of cells on a sheet; `ref()` gives the formula text that reads it."""

    sheet: str
    top: int
    left: int
    height: int = 1
    width: int = 1

    @property
    def bottom(self):
        return self.top + self.height - 1

    @property
    def right(self):
        return self.left + self.width - 1

    def ref(self, from_sheet=None, absolute=True):
        a = cell_name(self.top, self.left, absolute)
        if self.height > 1 or self.width > 1 or self.as_range:
            a += ":" + cell_name(self.bottom, self.right, absolute)
        return a if from_sheet == self.sheet else f"{quote_sheet(self.sheet)}!{a}"

    def corners(self):
        """'A1:B2' (even for one cell): the A1 text of the top-left and bottom-right cells."""
        return f"{cell_name(self.top, self.left)}:{cell_name(self.bottom, self.right)}"

    as_range = False  # a one-cell rect is written A1 (a value), a Range's A1:A1

    def rows(self, start, stop):
        return Rect(self.sheet, self.top + start, self.left, stop - start, self.width)

    def cols(self, start, stop):
        return Rect(self.sheet, self.top, self.left + start, self.height, stop - start)

    def row(self, i):
        return self.rows(i, i + 1)

    def col(self, j):
        return self.cols(j, j + 1)

    def cell(self, i, j):
        return Rect(self.sheet, self.top + i, self.left + j)

    def at(self, index):
        """The index-th cell of a one-row or one-column rect (the first of any other)."""
        return self.cell(0, index) if self.height == 1 else self.cell(index, 0)

    def read(self, get):
        """This rect's values as rows, get(row, col) giving each cell's (1-based, as in A1 notation)."""
        return [[get(r, c) for c in range(self.left, self.right + 1)] for r in range(self.top, self.bottom + 1)]

    def label_column(self):
        """Column A beside this block: each row's label (e.g. the token texts beside the embedding table)."""
        return Rect(self.sheet, self.top, LABEL_COL, self.height, 1)

    def index_column(self):
        """Column B beside this block: each row's index (e.g. the key position of an attention row)."""
        return Rect(self.sheet, self.top, NOTE_COL, self.height, 1)


@functools.lru_cache(maxsize=8)
def column(values):
    """A column of cells' rows, one list for blocks that repeat it (the vocabulary beside each lens's logits)."""
    return [[v] for v in values]


class Range(Rect):
    """A rect written as a range even when it is one cell (A1:A1): IronCalc's SUMIF, MATCH and LOOKUP take a lone
    cell reference for a value, not a range of one cell (docs/engines.md)."""

    as_range = True


@dataclass(frozen=True)
class Named(Rect):
    """A rectangle with a defined name: formulas read it by name (`MMULT(L0_attn_c_attn_weight_T,...)`);
    its parts (rows, columns, cells) are plain Rects."""

    name: str = ""

    def ref(self, from_sheet=None, absolute=True):
        return self.name


class Tab:
    """A sheet filled top to bottom: title, frozen header rows, then titled, labelled blocks."""

    def __init__(self, name, title, group, widths=None):
        if group not in GROUPS:
            raise ValueError(f"unknown tab group {group!r}")
        self.name, self.group = name, group
        self.book = None  # the Book this tab is in (Book.add)
        self.sheet = Sheet(name, widths=dict(widths or {LABEL_COL: 30, NOTE_COL: 7}), group=group)
        self.add(Cells(TITLE_ROW, LABEL_COL, [[title]], style=TITLE))
        self.row = HEADER_ROW
        self.frozen = False
        self.titles = []  # (text, cell) of each block title, in order

    # --- rendering: references relative to this tab ---------------------------------------------------
    def f(self, template, **refs):
        """Formula text with each {name} replaced by refs[name]: a Rect (rendered as seen from this tab)
        or a value."""
        return Formula(template.format(**{k: v.ref(self.name) if isinstance(v, Rect) else v for k, v in refs.items()}))

    def add(self, block):
        """Put a block of cells on the sheet; the book records the values of its constants (what the formulas
        read them as)."""
        self.sheet.add(block)
        if self.book is not None:
            self.book.constants(self.name, block)
        return block

    def array(self, rect, template, evaluate=True, **refs):
        """One classic array formula ({=...}) filling `rect`; the book computes its value, unless `evaluate`
        is False (the caller has it computed: Ctx.array's column by column formulas)."""
        self.add(ArrayFormula(rect, self.f(template, **refs)))
        if evaluate and self.evaluator() is not None:
            self.evaluator().array(rect, template, refs)
        return rect

    def evaluator(self):
        """What computes the cached value of each formula this tab gets (compile.values), or None."""
        return self.book and self.book.formula_values

    def each(self, rect, template, style=0, **refs):
        """One formula per cell of `rect`; a ref may be a function (i, j) -> Rect or value, for row i and
        column j of the rect."""

        def refs_at(i, j):
            return {k: v(i, j) if callable(v) else v for k, v in refs.items()}

        rows = [[self.f(template, **refs_at(i, j)) for j in range(rect.width)] for i in range(rect.height)]
        self.add(Cells(rect.top, rect.left, rows, style))
        if self.evaluator() is not None:
            self.evaluator().each(rect, template, refs_at)
        return rect

    def along(self, rect, template, moving, **refs):
        """One formula per cell of the row `rect`, each the first cell's moved along the row, written once (a
        shared formula: engines parse it once). `moving`: {name: Rect as wide as `rect`}, read at the cell's own
        column; `refs` are read whole."""
        first = {k: v.col(0).ref(self.name, absolute=False) for k, v in moving.items()}
        self.add(SharedFormula(rect, self.f(template, **refs, **first)))
        if self.evaluator() is not None:
            self.evaluator().each(rect, template, lambda _, j: {**refs, **{k: v.col(j) for k, v in moving.items()}})
        return rect

    def each_array(self, rect, template, **refs):
        """Like each, but every cell is an array formula of its own: Gnumeric (unlike Excel) evaluates a
        function's range argument element by element only there, e.g. SUM(EXP(range - max))."""

        def refs_at(i, j):
            return {k: v(i, j) if callable(v) else v for k, v in refs.items()}

        for i in range(rect.height):
            for j in range(rect.width):
                self.array(rect.cell(i, j), template, evaluate=False, **refs_at(i, j))
        if self.evaluator() is not None:
            self.evaluator().each(rect, template, refs_at)
        return rect

    def put(self, rect, rows, style=0):
        """Constants (or Formula objects, whose values the book computes) filling `rect`, given as a list of rows."""
        self.add(Cells(rect.top, rect.left, rows, style=style))
        if self.evaluator() is not None:
            for i, row in enumerate(rows):
                for j, v in enumerate(row):
                    if isinstance(v, Formula):
                        self.evaluator().formula(rect.cell(i, j), str(v))
        return rect

    def numbers(self, rect, values):
        self.add(Numbers(rect.top, rect.left, values))
        return rect

    # --- looks: number formats, heatmaps, links ----------------------------------------------------
    def format(self, rect, style):
        """A number format (style) for the rows of `rect`: the cells of array results take their row's."""
        for row in range(rect.top, rect.bottom + 1):
            self.sheet.row_styles[row] = style
        return rect

    def widen(self, rect, characters):
        """Columns of `rect` at least this wide."""
        for col in range(rect.left, rect.right + 1):
            self.sheet.widths[col] = max(self.sheet.widths.get(col, 0), characters)
        return rect

    def tall(self, rect, points=30):
        """Rows tall enough for large type."""
        self.sheet.row_heights.update({row: points for row in range(rect.top, rect.bottom + 1)})
        return rect

    def heatmap(self, rect, rule):
        """A conditional format (styles.colour_scale(...), styles.when(...)) over `rect`."""
        self.sheet.conditional.append((rect.ref(self.name, absolute=False), rule))
        return rect

    def grey_padding(self, in_prompt):
        """Grey every column whose `in_prompt` header cell is 0 (a padding position), from the header down."""
        first = f"{column_letter(in_prompt.left)}${in_prompt.top}"  # column relative, row fixed
        area = Rect(self.name, HEADER_ROW, in_prompt.left, max(self.row, in_prompt.top) - HEADER_ROW, in_prompt.width)
        self.sheet.conditional.insert(0, (area.ref(self.name, absolute=False), when(f"{first}=0", PADDING)))

    def link(self, cell, target):
        """Make `cell` a link to `target` (a Rect, or a Tab: its top-left corner)."""
        target = target if isinstance(target, Rect) else Rect(target.name, 1, 1)
        self.sheet.links.append((cell.ref(self.name, absolute=False), target.ref()))
        return cell

    def chart(self, title, categories, values, anchor, x_title=None, y_title=None, series_name=None, cache=None):
        """A line chart of `values` against `categories` (one row or column each, on any tab), covering the
        cells of `anchor` on this tab. `cache`: the values as computed, for viewers that do not calculate."""
        for rect in (categories, values):
            if rect.height > 1 and rect.width > 1:
                raise ValueError(f"{self.name}: a chart series is one row or one column, not {rect.corners()}")
        if categories.height * categories.width != values.height * values.width:
            raise ValueError(f"{self.name}: {categories.corners()} and {values.corners()} differ in length")
        if anchor.sheet != self.name:
            raise ValueError(f"{self.name}: a chart is drawn on its own tab, not on {anchor.sheet!r}")
        # Rect.ref, not a Named's name: a chart reads cells, with the sheet named
        corners = (anchor.top, anchor.left, anchor.bottom, anchor.right)
        chart = Chart(
            title,
            Rect.ref(categories),
            Rect.ref(values),
            corners,
            x_title,
            y_title,
            series_name,
            None if cache is None else list(cache),
        )
        self.sheet.charts.append(chart)
        return chart

    # --- allocation --------------------------------------------------------------------------------
    def header(self, label, width, style=BOLD, note=None):
        """The next frozen header row: its label, and the Rect of its `width` data cells (from column C)."""
        if self.frozen:
            raise ValueError(f"{self.name}: header rows come before the blocks")
        self.add(Cells(self.row, LABEL_COL, [[label, note]], style=style))
        self.row += 1
        return Rect(self.name, self.row - 1, FIRST_COL, 1, width)

    def freeze(self):
        """End the header: everything above stays in view, and column A and B too."""
        self.sheet.freeze = (self.row, FIRST_COL)
        self.frozen = True
        self.row += 1

    def title(self, text):
        """A block's title; the Guide's table of contents links to it."""
        self.add(Cells(self.row, LABEL_COL, [[text]], style=BOLD))
        self.titles.append((text, Rect(self.name, self.row, LABEL_COL)))
        self.row += 1

    def banner(self, text, style, width=3):
        """A section heading across the first `width` columns."""
        self.add(Cells(self.row, LABEL_COL, [[text] + [""] * (width - 1)], style=style))
        self.row += 1

    def note(self, text, gap=0, fit=None):
        """A line of text from column A; `fit`: at most that many characters a row, on as many rows as it takes."""
        lines = textwrap.wrap(text, fit, subsequent_indent="    ") if fit else [text]
        self.add(Cells(self.row, LABEL_COL, [[line] for line in lines]))
        self.row += len(lines) + gap

    def skip(self, n=1):
        self.row += n

    def block(self, labels, width, title=None):
        """Reserve one row per label ((A text, B index or note) pairs) of `width` cells, then a blank row."""
        if title:
            self.title(title)
        top = self.row
        texts, indices = zip(*labels) if labels else ((), ())
        if not all(text is None for text in texts):  # else column A is left free (for a formula of labels)
            self.add(Cells(top, LABEL_COL, column(texts)))
        # whole numbers, explicitly: LibreOffice lets a row's number format override a cell's General
        self.add(Cells(top, NOTE_COL, column(indices), style=IDS))
        self.row += len(labels) + 1
        return Rect(self.name, top, FIRST_COL, len(labels), width)

    def line(self, label, width, note=None, style=0):
        """One labelled row of `width` cells (no blank row after it)."""
        self.add(Cells(self.row, LABEL_COL, [[label, note]], style=BOLD if style else 0))
        self.row += 1
        return Rect(self.name, self.row - 1, FIRST_COL, 1, width)

    def field(self, label, value=None, style=0):
        """A labelled single cell (the About rows, the Prompt cell): returns its Rect."""
        self.add(Cells(self.row, LABEL_COL, [[label]], style=BOLD))
        cell = Rect(self.name, self.row, FIRST_COL)
        if value is not None:
            self.put(cell, [[value]], style)
        self.row += 1
        return cell


class WeightsTab(Tab):
    """Parameter tensors. Matrices stack downwards, at most `width` columns wide; vectors stand side by side
    as columns to their right. A narrow, dense sheet matters: the `formulas` engine visits every cell of a
    sheet's bounding box, empty or not."""

    def __init__(self, name, width):
        super().__init__(name, name, "weights")
        self.width, self.row = width, 3
        self.index_col = FIRST_COL + width + 1  # after a blank column: the vectors' indices, then the vectors
        self.next_vector, self.index = self.index_col + 1, None

    def matrix(self, title, values, labels=None):
        """Values under a title, with column and row indices (and row labels in column A, when given)."""
        n_rows, n_cols = values.shape
        top = self.row
        self.add(Cells(top, LABEL_COL, [[title]], style=BOLD))
        if labels is not None:
            self.add(Cells(top + 2, LABEL_COL, [[text] for text in labels]))
        self.add(Numbers(top + 1, FIRST_COL, np.arange(n_cols)[None, :]))
        self.add(Numbers(top + 2, NOTE_COL, np.arange(n_rows)[:, None]))
        self.row += n_rows + 4
        return self.numbers(Rect(self.name, top + 2, FIRST_COL, n_rows, n_cols), values)

    def vector(self, title, values):
        """A column with its title above it, to the right of the matrices."""
        col, self.next_vector = self.next_vector, self.next_vector + 1
        self.add(Cells(3, col, [[title]], style=BOLD))
        indices = np.arange(len(values))[:, None]
        if self.index is None:
            self.index = self.add(Numbers(5, self.index_col, indices))
        elif len(values) > self.index.height:  # the index column grows with the longest vector
            self.index.values = indices
        self.sheet.widths[col] = max(12, len(title) + 2)  # the title in full
        return self.numbers(Rect(self.name, 5, col, len(values), 1), values.reshape(-1, 1))


READ_BACK_BYTES = 384 * 2**20  # the float64 weights kept at once (GPT-2's token table alone is 309 MB)


class ReadBack:
    """A float32 block's values as a spreadsheet reads them (decimal_values), worked out when a formula first reads
    them and kept while they are among the most recently read (`kept`, READ_BACK_BYTES at most): the reads of one
    block come together, and the weights are never all held again as float64 (1 GB for GPT-2 124M)."""

    def __init__(self, values, kept):
        self.values, self.kept, self.whole = values, kept, None

    def __getitem__(self, key):
        if self.whole is None:
            self.whole = decimal_values(self.values)
            while self.kept and sum(r.whole.nbytes for r in self.kept) + self.whole.nbytes > READ_BACK_BYTES:
                self.kept.popleft().whole = None  # the least recently read
        else:
            self.kept.remove(self)
        self.kept.append(self)  # the most recently read last
        return self.whole[key]


class Book:
    """The tabs of one workbook; `sheets()` gives them in reading order (by group, then as created)."""

    def __init__(self):
        self.tabs = {}
        self.calculation = "auto"  # or "manual": the workbook's calculation mode (contract.AUTO, MANUAL)
        self.stages = []  # (template stage, its output's Rect or per-head Rects), set by compile.lower
        self.values = {}  # sheet -> [(Rect, 2-D values)]: the results of its cells, as computed at build time
        self.rows = {}  # sheet -> {row: [index in values of each record covering that row]}
        self.formula_values = None  # what computes the formulas' results (compile.values.FormulaValues), if anything
        self.complete = False  # every block is written (an unrecorded cell that holds nothing is empty)
        self.read_back = collections.deque()  # the ReadBacks holding their float64 values, oldest first

    # --- cached values: what each formula cell computes, written into the file -------------------------
    def cache(self, rect, values):
        """Record the results of `rect`'s cells (an array broadcast to its shape; numbers or texts)."""
        if values is None:
            return rect
        if not isinstance(values, ReadBack):
            values, shape = np.asarray(values), (rect.height, rect.width)
            values = (
                values.reshape(shape) if values.size == rect.height * rect.width else np.broadcast_to(values, shape)
            )
        records, rows = self.values.setdefault(rect.sheet, []), self.rows.setdefault(rect.sheet, {})
        for row in range(rect.top, rect.bottom + 1):
            rows.setdefault(row, []).append(len(records))
        records.append((rect, values))
        return rect

    def value(self, rect):
        """The recorded results of `rect` (the latest record wins), or None while a cell of it is unknown. Once the
        book is complete, cells that hold nothing read as 0, as a formula reads an empty cell."""
        records, rows = self.values.get(rect.sheet, ()), self.rows.get(rect.sheet, {})
        for k in reversed(rows.get(rect.top, ())):
            r, v = records[k]
            if rect.bottom <= r.bottom and r.left <= rect.left and rect.right <= r.right:
                return v[rect.top - r.top : rect.bottom - r.top + 1, rect.left - r.left : rect.right - r.left + 1]
        out = np.full((rect.height, rect.width), None, object)  # pieced together from the records it overlaps
        for k in sorted({k for row in range(rect.top, rect.bottom + 1) for k in rows.get(row, ())}):
            r, v = records[k]
            top, bottom = max(r.top, rect.top), min(r.bottom, rect.bottom)
            left, right = max(r.left, rect.left), min(r.right, rect.right)
            if left <= right:
                out[top - rect.top : bottom - rect.top + 1, left - rect.left : right - rect.left + 1] = v[
                    top - r.top : bottom - r.top + 1, left - r.left : right - r.left + 1
                ]
        for i, j in zip(*np.nonzero(np.equal(out, None))):
            if not self.complete or self.tabs[rect.sheet].sheet.holds(rect.top + i, rect.left + j):
                return None
            out[i, j] = 0.0
        return out.astype(float) if all(isinstance(v, (int, float, np.number)) for v in out.flat) else out

    def attach_values(self):
        """Give every formula cell whose result was recorded its cached value, and let the records go. Returns
        (formula cells, with a value)."""
        cells = known = 0
        for name, tab in self.tabs.items():
            for b in tab.sheet.blocks:
                if isinstance(b, RegionFormula):
                    b.values = self.value(b.region)
                    cells += b.region.height * b.region.width
                    known += 0 if b.values is None else b.values.size
                elif isinstance(b, Cells):
                    for i, row in enumerate(b.rows):
                        for j, v in enumerate(row):
                            if isinstance(v, Formula):
                                value = self.value(Rect(name, b.top + i, b.left + j))
                                cells += 1
                                if value is not None:
                                    row[j] = v.with_value(value.item())
                                    known += 1
        self.values, self.rows = {}, {}  # the results now live in the blocks, and the weights need no float64
        self.read_back.clear()
        return cells, known

    def add(self, tab):
        if tab.name in self.tabs:
            raise ValueError(f"two tabs named {tab.name!r}")
        self.tabs[tab.name] = tab
        tab.book = self
        for block in tab.sheet.blocks:  # what the tab got before it joined the book (its title)
            self.constants(tab.name, block)
        return tab

    def constants(self, sheet, block):
        """Record the values a block's constant cells hold, as a spreadsheet reads them (a float32 weight as its
        shortest decimal; a float64 as itself, its repr), for the formulas that read them; only when the book computes
        its formulas' values."""
        if self.formula_values is None:
            return
        if isinstance(block, Numbers):
            values = block.values
            self.cache(
                Rect(sheet, block.top, block.left, *values.shape),
                ReadBack(values, self.read_back) if values.dtype == np.float32 else values,
            )
        elif isinstance(block, Cells) and block.rows:
            width = max(len(row) for row in block.rows)
            if any(isinstance(v, Formula) for row in block.rows for v in row):
                for i, row in enumerate(block.rows):
                    for j, v in enumerate(row):
                        if v is not None and not isinstance(v, Formula):
                            self.cache(Rect(sheet, block.top + i, block.left + j), v)
            elif all(len(row) == width for row in block.rows):
                self.cache(Rect(sheet, block.top, block.left, len(block.rows), width), np.array(block.rows, object))

    @contextlib.contextmanager
    def values_by_writer(self):
        """Formulas written inside the block get no computed value: their writer records its own (the tokenizer's
        tabs, from its Python mirror)."""
        evaluator, self.formula_values = self.formula_values, None
        try:
            yield
        finally:
            self.formula_values = evaluator

    def __getitem__(self, name):
        return self.tabs[name]

    def sheets(self):
        tabs = sorted(self.tabs.values(), key=lambda t: GROUPS.index(t.group))  # stable: creation order within a group
        return [t.sheet for t in tabs]


__all__ = [
    "Rect",
    "Tab",
    "WeightsTab",
    "Book",
    "Formula",
    "INPUT",
    "BOLD",
    "TITLE",
    "FIRST_COL",
    "cell_name",
    "column_letter",
    "quote_sheet",
]
