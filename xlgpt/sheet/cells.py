"""The workbook as data: sheets of blocks (constants, numbers, formulas, array formulas, charts), each block
writing the XML of its own cells; cell addresses and quoted sheet names."""

import math
import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import numpy as np

from xlgpt.decimals import decimal_texts
from xlgpt.sheet.styles import PLAIN

CHUNK_CELLS = 250_000  # cells formatted per task when several processes share the work
TEXT_CELLS = 16_384  # cells turned into text at once (batch_row); a chunk may end sooner, wasting the rest


def _column_letter(col):
    letters = ""
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


MAX_COLUMNS = 16384
COLUMNS = [_column_letter(c) for c in range(MAX_COLUMNS + 1)]  # COLUMNS[1] = "A" ... COLUMNS[16384] = "XFD"


def column_letter(col):
    """1 -> A, 28 -> AB."""
    return COLUMNS[col] if 0 < col <= MAX_COLUMNS else _column_letter(col)


def cell_name(row, col, absolute=False):
    d = "$" if absolute else ""
    return f"{d}{column_letter(col)}{d}{row}"


def quote_sheet(name):
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else "'" + name.replace("'", "''") + "'"


# Blocks: each writes the XML of its own cells, a row at a time. Every cell carries its address: the
# schema makes `r` optional, but Gnumeric drops cells without it.


@dataclass
class Numbers:
    top: int
    left: int
    values: np.ndarray  # 2-D; floats are written as their shortest round-tripping decimal

    @property
    def height(self):
        return self.values.shape[0]

    def row_xml(self, i, strings=None):
        # '<c r="A' 7 '"><v>' 0.5 '</v></c><c r="B' 7 '"><v>' 1.5 ... '</v></c>': the column openings are
        # made once per block, the row number once per row, and one join assembles them (no loop per cell).
        width = self.values.shape[1]
        text = batch_row(self, i, width, lambda rows: numbers_text(self.values[rows].ravel()))
        opens = self.__dict__.get("_opens")
        if opens is None:
            opens = self._opens = [b'<c r="' + COLUMNS[self.left].encode()] + [
                b'</v></c><c r="' + c.encode() for c in COLUMNS[self.left + 1 : self.left + len(text)]
            ]
        parts = [None] * (3 * len(text))
        parts[0::3] = opens
        parts[1::3] = [f'{self.top + i}"><v>'.encode()] * len(text)
        parts[2::3] = text
        return (b"".join(parts) + b"</v></c>").decode()


def batch_row(block, i, width, texts):
    """Row i of a block's cell texts, made TEXT_CELLS at a time, at NumPy's speed: `texts(rows)` gives those of a
    slice of rows, flat. The batch is kept on the block until its last row."""
    first, batch = block.__dict__.get("_batch", (None, None))
    if first is None or not 0 <= i - first < len(batch):
        flat = texts(slice(i, i + max(1, TEXT_CELLS // width)))
        first, batch = block._batch = i, [flat[k : k + width] for k in range(0, len(flat), width)]
    if i == block.height - 1:
        del block._batch
    return batch[i - first]


def numbers_text(values):
    """The text of each number, as bytes: a float32 as its shortest decimal (decimals.py)."""
    if values.dtype == np.float32:
        return decimal_texts(values).tolist()
    return [repr(float(v)).encode() if values.dtype.kind == "f" else str(int(v)).encode() for v in values]


# Characters XML 1.0 cannot hold; a workbook containing one is rejected or cut short by readers.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_text(text):
    return escape(_NOT_XML.sub("\ufffd", text))


class Formula(str):
    """Formula text (without the leading '='), as opposed to a text value. `value`: its result, when known at
    build time, written as the cell's cached value (what a viewer that does not calculate shows)."""

    value = None

    def with_value(self, value):
        formula = Formula(self)
        formula.value = value
        return formula


class CellError(str):
    """An error a formula gives (#DIV/0!, #N/A), as a cached result."""


DIV0 = CellError("#DIV/0!")


def cached_xml(value):
    """A formula cell's cached result: (its type attribute, its <v> element); nothing when unknown. The type is
    always explicit (t="n" for a number, the default), so a reader tells cached results from constants."""
    if value is None:
        return "", ""
    if isinstance(value, CellError):
        return ' t="e"', f"<v>{value}</v>"
    if isinstance(value, str):
        return ' t="str"', f"<v>{xml_text(value)}</v>"
    value = float(value)
    return _number_xml(value) if math.isfinite(value) else ("", "")


def _number_xml(value):
    """A finite float's cached_xml: a whole number (below 1e15, where every digit is exact) without ".0"."""
    return ' t="n"', f"<v>{int(value) if value.is_integer() and abs(value) < 1e15 else repr(value)}</v>"


def cached_xmls(values):
    """cached_xml of each value of a 1-D array; of floats, at a fraction of the cost (no test of each one's type)."""
    if values.dtype.kind != "f":
        return [cached_xml(v) for v in values]
    return [_number_xml(v) if f else ("", "") for v, f in zip(values.tolist(), np.isfinite(values).tolist())]


def value_xml(value, style, ref, strings=None):
    """One cell at address `ref`. Text found in `strings` ({text: index}, the shared-strings table) is
    written as a reference to it, other text inline. Every cell names its style: one without would take
    its row's (a number format)."""
    c = f'<c r="{ref}" s="{style or PLAIN}"'
    if value is None or value == "":  # an empty cell that keeps its style
        return f"{c}/>"
    if isinstance(value, Formula):
        kind, cached = cached_xml(value.value)
        return f"{c}{kind}><f>{escape(value)}</f>{cached}</c>"
    if isinstance(value, str):
        index = strings.get(value) if strings else None
        if index is not None:
            return f'{c} t="s"><v>{index}</v></c>'
        return f'{c} t="inlineStr"><is><t xml:space="preserve">{xml_text(value)}</t></is></c>'
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("booleans are not written")
    return f"{c}><v>{value!r}</v></c>" if isinstance(value, float) else f"{c}><v>{int(value)}</v></c>"


@dataclass
class Cells:
    """Small mixed blocks: labels, constants and one formula per cell (Formula)."""

    top: int
    left: int
    rows: list  # list of lists of str | int | float | None
    style: int = 0

    @property
    def height(self):
        return len(self.rows)

    def row_xml(self, i, strings=None):
        row, style = str(self.top + i), self.style
        return "".join(
            value_xml(v, style, COLUMNS[j] + row, strings)
            for j, v in enumerate(self.rows[i], self.left)
            if v is not None or style
        )


@dataclass
class RegionFormula:
    """A formula that computes a whole region (a layout.Rect), written once; with `values` (the region's results,
    2-D), every cell of the region carries its cached value."""

    region: object
    formula: str
    values: object = None

    @property
    def top(self):
        return self.region.top

    @property
    def left(self):
        return self.region.left


class ArrayFormula(RegionFormula):
    """A classic array formula ({=MMULT(...)}) filling its region from the top-left cell."""

    @property
    def height(self):
        return 1 if self.values is None else self.region.height

    def row_xml(self, i, strings=None):
        formula = ""
        if i == 0:
            formula = (
                f'<f t="array" ref="{self.region.ref(self.region.sheet, absolute=False)}">{escape(self.formula)}</f>'
            )
            if self.values is None:
                return f'<c r="{cell_name(self.top, self.left)}">{formula}</c>'
        values = np.asarray(self.values)
        cells = batch_row(self, i, values.shape[1], lambda rows: cached_xmls(values[rows].ravel()))
        row = str(self.top + i)
        return "".join(
            f'<c r="{COLUMNS[j]}{row}"{kind}>{formula if j == self.left else ""}{value}</c>'
            for j, (kind, value) in enumerate(cells, self.left)
            if value or formula and j == self.left
        )


class SharedFormula(RegionFormula):
    """One formula in every cell of its region, each the top-left cell's moved with it (relative references):
    an OOXML shared formula, its text written once, so engines parse it once. `si`: its number on the sheet."""

    si = 0

    @property
    def height(self):
        return self.region.height

    def row_xml(self, i, strings=None):
        ref = self.region.ref(self.region.sheet, absolute=False)
        row, cells = str(self.top + i), []
        for j in range(self.region.width):
            kind, cached = cached_xml(None if self.values is None else self.values[i][j])
            text = f' ref="{ref}" si="{self.si}">{escape(self.formula)}</f>' if i == j == 0 else f' si="{self.si}"/>'
            cells.append(f'<c r="{COLUMNS[self.left + j]}{row}" s="{PLAIN}"{kind}><f t="shared"{text}{cached}</c>')
        return "".join(cells)


@dataclass
class Chart:
    """A line chart of one series, drawn over cells of its sheet. References are formula text (absolute, with
    the sheet name): they may read another sheet. `anchor` is (top, left, bottom, right), the cells covered."""

    title: str
    categories: str
    values: str
    anchor: tuple
    x_title: str = None
    y_title: str = None
    series_name: str = None
    cache: list = None  # the values as last computed: viewers that do not calculate still draw the curve


@dataclass
class Sheet:
    name: str
    blocks: list = field(default_factory=list)
    freeze: tuple = None  # (row, col) of the first scrolling cell
    widths: dict = field(default_factory=dict)  # column -> width in characters
    group: str = None  # the tab's colour, from styles.TAB_COLOURS
    row_styles: dict = field(default_factory=dict)  # row -> style of its cells without one (array results)
    row_heights: dict = field(default_factory=dict)  # row -> height in points (rows in large type)
    conditional: list = field(default_factory=list)  # (range text, rule XML with {priority})
    links: list = field(default_factory=list)  # (cell, location such as 'Layer 0'!A1): links inside the book
    charts: list = field(default_factory=list)  # Chart objects, drawn in one drawing part
    occupied: tuple = None  # the cells the blocks fill (holds())
    shared_formulas: int = 0  # how many SharedFormula blocks it has: the next one's si

    def add(self, block):
        if isinstance(block, SharedFormula):
            block.si = self.shared_formulas
            self.shared_formulas += 1
        self.blocks.append(block)
        self.occupied = None
        return block

    def holds(self, row, col):
        """Does any block put something in this cell?"""
        if self.occupied is None:  # made on first use: (the corners of the blocks without holes, the other cells)
            full, cells = [], set()
            for b in self.blocks:
                if isinstance(b, RegionFormula):
                    full.append((b.region.top, b.region.bottom, b.region.left, b.region.right))
                elif isinstance(b, Numbers):
                    full.append((b.top, b.top + b.values.shape[0] - 1, b.left, b.left + b.values.shape[1] - 1))
                elif b.rows and all(len(r) == len(b.rows[0]) and None not in r for r in b.rows):
                    full.append((b.top, b.top + len(b.rows) - 1, b.left, b.left + len(b.rows[0]) - 1))
                else:
                    cells |= {
                        (b.top + i, b.left + j) for i, r in enumerate(b.rows) for j, v in enumerate(r) if v is not None
                    }
            self.occupied = (np.array(full, np.int64).reshape(-1, 4), cells)
        full, cells = self.occupied
        inside = (full[:, 0] <= row) & (row <= full[:, 1]) & (full[:, 2] <= col) & (col <= full[:, 3])
        return bool(inside.any()) or (row, col) in cells

    def rows_xml(self, start=1, stop=None, strings=None):
        """Yield the XML of each non-empty row in [start, stop), in order, merging the blocks that share it.
        A styled row is written even where it has no cells: inside an array result, its style is the cells'.
        `strings`: the shared-strings table {text: index} (text not in it is written inline)."""
        stop = stop or self.extent()[0] + 1
        blocks = sorted(
            (b for b in self.blocks if b.top < stop and b.top + b.height > start), key=lambda b: (b.top, b.left)
        )
        styled = sorted((r for r in {**self.row_styles, **self.row_heights} if start <= r < stop), reverse=True)
        active, k, row, ending = [], 0, start, stop  # ending: the first row where an active block ends
        while (k < len(blocks) or active) and row < stop:
            if not active:
                row = max(row, blocks[k].top)
            if k < len(blocks) and blocks[k].top <= row:
                while k < len(blocks) and blocks[k].top <= row:
                    active.append(blocks[k])
                    k += 1
                active.sort(key=lambda b: b.left)
                ending = min(b.top + b.height - 1 for b in active)
            while styled and styled[-1] < row:
                yield self._row(styled.pop())
            if styled and styled[-1] == row:
                styled.pop()
            xml = "".join(b.row_xml(row - b.top, strings) for b in active)
            if xml or row in self.row_styles or row in self.row_heights:
                yield self._row(row, xml)
            if row >= ending:
                active = [b for b in active if b.top + b.height - 1 > row]
                ending = min((b.top + b.height - 1 for b in active), default=stop)
            row += 1
        while styled:
            yield self._row(styled.pop())

    def _row(self, row, xml=""):
        style, height = self.row_styles.get(row), self.row_heights.get(row)
        attrs = (f' s="{style}" customFormat="1"' if style else "") + (
            f' ht="{height}" customHeight="1"' if height else ""
        )
        return f'<row r="{row}"{attrs}>{xml}</row>' if xml else f'<row r="{row}"{attrs}/>'

    def chunks(self, cells=CHUNK_CELLS):
        """Row ranges [start, stop) of about `cells` cells each, covering the sheet."""
        bottom, right = self.extent()
        step = max(1, cells // right)
        return [(r, min(r + step, bottom + 1)) for r in range(1, bottom + 1, step)]

    def cell_counts(self):
        """(constant cells, formula cells); an array or shared formula counts every cell of its region."""
        constants = formulas = 0
        for b in self.blocks:
            if isinstance(b, Numbers):
                constants += b.values.size
            elif isinstance(b, RegionFormula):
                formulas += b.region.height * b.region.width
            else:
                for row in b.rows:
                    for v in row:
                        if isinstance(v, Formula):
                            formulas += 1
                        elif v is not None:
                            constants += 1
        return constants, formulas

    def extent(self):
        bottom = right = 1
        for b in self.blocks:
            if isinstance(b, RegionFormula):
                r = b.region
                bottom, right = max(bottom, r.top + r.height - 1), max(right, r.left + r.width - 1)
            else:
                width = b.values.shape[1] if isinstance(b, Numbers) else max((len(r) for r in b.rows), default=1)
                bottom, right = max(bottom, b.top + b.height - 1), max(right, b.left + width - 1)
        return bottom, right
