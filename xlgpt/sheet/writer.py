"""A small streaming .xlsx writer: rows go straight into the zip, no Python object per cell.

openpyxl's write-only mode manages ~0.1M cells/s; weights are the bulk of a GPT-2 book, so numeric
blocks are formatted a row at a time with NumPy (shortest float32 decimals) and joined as strings.
"""
import math
import multiprocessing
import multiprocessing.pool
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from xlgpt.package import XlgptError
from xlgpt.sheet.styles import PLAIN, TAB_COLOURS, styles_xml

CHUNK_CELLS = 250_000          # cells formatted per task when several processes share the work
# LibreOffice 7.4 cannot open an .xlsx larger than 2 GiB. Weights, every cell with its address, take
# ~9.9 bytes a cell at deflate level 1 (fast) and ~8.3 at level 6 (4x slower), so big books are
# compressed harder to stay openable.
LIBREOFFICE_MAX_BYTES = 2**31
FAST_LEVEL, SMALL_LEVEL, FAST_BYTES_PER_CELL = 1, 6, 9.9
PARALLEL_CELLS = 2_000_000     # below this, forking workers costs more than it saves


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


def decimal_values(a, chunk=1 << 20):
    """The float64 values a spreadsheet reads back from the decimals Numbers writes for float32 `a`:
    for each value, the shortest decimal (1 to 9 significant digits) that round-trips to it."""
    a32 = np.asarray(a, dtype=np.float32).ravel()
    if a32.size > chunk:  # a piece at a time: the search's temporaries take ~50 bytes a value
        return np.concatenate([decimal_values(a32[i:i + chunk]) for i in range(0, a32.size, chunk)]).reshape(np.shape(a))
    x = a32.astype(np.float64)
    out = x.copy()
    todo = np.flatnonzero(x)
    exponent = np.floor(np.log10(np.abs(x[todo])))
    for digits in range(1, 10):
        scale = 10.0 ** (digits - 1 - exponent)
        rounded = np.round(x[todo] * scale) / scale
        ok = rounded.astype(np.float32) == a32[todo]
        out[todo[ok]] = rounded[ok]
        todo, exponent = todo[~ok], exponent[~ok]
    return out.reshape(np.shape(a))


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
        row = self.values[i]
        text = row.astype(str).tolist() if row.dtype.kind == "f" else [str(int(v)) for v in row]
        # '<c r="A' 7 '"><v>' 0.5 '</v></c><c r="B' 7 '"><v>' 1.5 ... '</v></c>': the column openings are
        # made once per block, the row number once per row, and one join assembles them (no loop per cell).
        opens = self.__dict__.get("_opens")
        if opens is None:
            opens = self._opens = ['<c r="' + COLUMNS[self.left]] + [
                '</v></c><c r="' + c for c in COLUMNS[self.left + 1:self.left + len(text)]]
        parts = [None] * (3 * len(text))
        parts[0::3] = opens
        parts[1::3] = [f'{self.top + i}"><v>'] * len(text)
        parts[2::3] = text
        return "".join(parts) + "</v></c>"


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
    if not math.isfinite(value):
        return "", ""
    return ' t="n"', f"<v>{int(value) if value.is_integer() and abs(value) < 1e15 else repr(value)}</v>"


def _value_xml(value, style, ref, strings=None):
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
        return "".join(_value_xml(v, style, COLUMNS[j] + row, strings)
                       for j, v in enumerate(self.rows[i], self.left) if v is not None or style)


@dataclass
class ArrayFormula:
    """A classic array formula ({=MMULT(...)}) filling a whole region (a layout.Rect) from its top-left cell;
    with `values` (the region's results, 2-D), every cell of the region carries its cached value."""
    region: object
    formula: str
    values: object = None

    @property
    def top(self):
        return self.region.top

    @property
    def left(self):
        return self.region.left

    @property
    def height(self):
        return 1 if self.values is None else self.region.height

    def row_xml(self, i, strings=None):
        ref = self.region.ref(self.region.sheet, absolute=False)
        formula = f'<f t="array" ref="{ref}">{escape(self.formula)}</f>'
        if self.values is None:
            return f'<c r="{cell_name(self.top, self.left)}">{formula}</c>'
        row, cells = str(self.top + i), []
        for j, value in enumerate(self.values[i]):
            kind, cached = cached_xml(value)
            if cached or i == j == 0:
                cells.append(f'<c r="{COLUMNS[self.left + j]}{row}"{kind}>{formula if i == j == 0 else ""}{cached}</c>')
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
    group: str = None     # the tab's colour, from styles.TAB_COLOURS
    row_styles: dict = field(default_factory=dict)  # row -> style of its cells without one (array results)
    row_heights: dict = field(default_factory=dict)  # row -> height in points (rows in large type)
    conditional: list = field(default_factory=list)  # (range text, rule XML with {priority})
    links: list = field(default_factory=list)  # (cell, location such as 'Layer 0'!A1): links inside the book
    charts: list = field(default_factory=list)  # Chart objects, drawn in one drawing part

    def add(self, block):
        self.blocks.append(block)
        return block

    def rows_xml(self, start=1, stop=None, strings=None):
        """Yield the XML of each non-empty row in [start, stop), in order, merging the blocks that share it.
        A styled row is written even where it has no cells: inside an array result, its style is the cells'.
        `strings`: the shared-strings table {text: index} (text not in it is written inline)."""
        stop = stop or self.extent()[0] + 1
        blocks = sorted((b for b in self.blocks if b.top < stop and b.top + b.height > start),
                        key=lambda b: (b.top, b.left))
        styled = sorted((r for r in {**self.row_styles, **self.row_heights} if start <= r < stop), reverse=True)
        active, k, row = [], 0, start
        while (k < len(blocks) or active) and row < stop:
            if not active:
                row = max(row, blocks[k].top)
            while k < len(blocks) and blocks[k].top <= row:
                active.append(blocks[k])
                k += 1
            active.sort(key=lambda b: b.left)
            while styled and styled[-1] < row:
                yield self._row(styled.pop())
            if styled and styled[-1] == row:
                styled.pop()
            xml = "".join(b.row_xml(row - b.top, strings) for b in active)
            if xml or row in self.row_styles or row in self.row_heights:
                yield self._row(row, xml)
            active = [b for b in active if b.top + b.height - 1 > row]
            row += 1
        while styled:
            yield self._row(styled.pop())

    def _row(self, row, xml=""):
        style, height = self.row_styles.get(row), self.row_heights.get(row)
        attrs = (f' s="{style}" customFormat="1"' if style else "") + (f' ht="{height}" customHeight="1"' if height else "")
        return f'<row r="{row}"{attrs}>{xml}</row>' if xml else f'<row r="{row}"{attrs}/>'

    def chunks(self, cells=CHUNK_CELLS):
        """Row ranges [start, stop) of about `cells` cells each, covering the sheet."""
        bottom, right = self.extent()
        step = max(1, cells // right)
        return [(r, min(r + step, bottom + 1)) for r in range(1, bottom + 1, step)]

    def cell_counts(self):
        """(constant cells, formula cells); an array formula counts every cell it fills."""
        constants = formulas = 0
        for b in self.blocks:
            if isinstance(b, Numbers):
                constants += b.values.size
            elif isinstance(b, ArrayFormula):
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
            if isinstance(b, ArrayFormula):
                r = b.region
                bottom, right = max(bottom, r.top + r.height - 1), max(right, r.left + r.width - 1)
            else:
                width = b.values.shape[1] if isinstance(b, Numbers) else max((len(r) for r in b.rows), default=1)
                bottom, right = max(bottom, b.top + b.height - 1), max(right, b.left + width - 1)
        return bottom, right


NS = ('xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
      'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"')
XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"
STYLES = styles_xml(XML_HEAD)


def _sheet_head(sheet):
    bottom, right = sheet.extent()
    xml = [XML_HEAD, f"<worksheet {NS}>"]
    if sheet.group:
        xml.append(f'<sheetPr><tabColor rgb="{TAB_COLOURS[sheet.group]}"/></sheetPr>')
    xml.append(f'<dimension ref="A1:{cell_name(bottom, right)}"/>')
    if sheet.freeze:
        r, c = sheet.freeze
        split = (f' xSplit="{c - 1}"' if c > 1 else "") + (f' ySplit="{r - 1}"' if r > 1 else "")
        xml.append(f'<sheetViews><sheetView workbookViewId="0"><pane{split} topLeftCell="{cell_name(r, c)}" '
                   f'activePane="bottomRight" state="frozen"/></sheetView></sheetViews>')
    if sheet.widths:
        xml.append("<cols>" + "".join(f'<col min="{c}" max="{c}" width="{w}" customWidth="1"/>'
                                      for c, w in sorted(sheet.widths.items())) + "</cols>")
    xml.append("<sheetData>")
    return "".join(xml)


def _sheet_tail(sheet):
    """After the cells: conditional formats (heatmaps, greyed padding), then links inside the book."""
    xml = ["</sheetData>"]
    for priority, (where, rule) in enumerate(sheet.conditional, 1):
        xml.append(f'<conditionalFormatting sqref="{where}">{rule.format(priority=priority)}</conditionalFormatting>')
    if sheet.links:
        xml.append("<hyperlinks>" + "".join(f'<hyperlink ref="{cell}" location="{escape(location, {chr(34): "&quot;"})}"/>'
                                            for cell, location in sheet.links) + "</hyperlinks>")
    if sheet.charts:  # CT_Worksheet puts the drawing after hyperlinks and page setup; its part is the sheet's rId1
        xml.append('<drawing r:id="rId1"/>')
    return "".join(xml) + "</worksheet>"


def _member(zf, name, level):
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed time: same input, same bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", level)
    return zf.open(info, "w", force_zip64=True)


def compression_level(sheets):
    cells = sum(sum(s.cell_counts()) for s in sheets)  # constants, and formulas with their cached values
    return SMALL_LEVEL if cells * FAST_BYTES_PER_CELL > 0.9 * LIBREOFFICE_MAX_BYTES else FAST_LEVEL


def write_workbook(path, sheets, names, progress=None, level=None, calculation="auto"):
    """Write sheets (in order) and defined names {name: layout.Rect} to `path`, atomically.

    `progress(sheet, rows_done)` is called as rows are written, for progress bars. `calculation`: the
    book's calculation mode, "auto" or "manual" (see CALC_PR). A formula beyond Excel's limits is an error
    before anything is written (limits.py).
    """
    from xlgpt.safefile import atomic_file
    from xlgpt.sheet.limits import check_formulas

    path = Path(path)
    check_formulas(sheets)
    level = level or compression_level(sheets)
    with atomic_file(path) as f, zipfile.ZipFile(f, "w") as zf:
        _write_parts(zf, sheets, names, progress, level, CALC_PR[calculation])


# The calculation mode. auto: Excel computes every formula on opening (the file carries no results) and after
# each edit. manual: nothing until F9 (Excel ignores fullCalcOnLoad in manual mode), nor on saving
# (calcOnSave="0"), so a book of millions of formula cells opens at once. calcId: Excel 2019's engine; a
# lower one makes Excel recalculate on opening and ask to save on closing.
CALC_PR = {"auto": '<calcPr calcId="191029" fullCalcOnLoad="1"/>',
           "manual": '<calcPr calcId="191029" calcMode="manual" calcOnSave="0"/>'}


# A minimal Office theme (the 2007 colours and fonts; the formatting scheme holds the three entries of
# each list the schema asks for). Excel expects a workbook to have one; without it, validators report
# an error and Excel rewrites the file.
DRAWING = "http://schemas.openxmlformats.org/drawingml/2006/main"
_PH = '<a:solidFill><a:schemeClr val="phClr"/></a:solidFill>'
THEME = (XML_HEAD + f'<a:theme xmlns:a="{DRAWING}" name="Office Theme"><a:themeElements>'
         '<a:clrScheme name="Office"><a:dk1><a:sysClr val="windowText" lastClr="000000"/></a:dk1>'
         '<a:lt1><a:sysClr val="window" lastClr="FFFFFF"/></a:lt1>'
         + "".join(f'<a:{k}><a:srgbClr val="{v}"/></a:{k}>' for k, v in (
             ("dk2", "1F497D"), ("lt2", "EEECE1"), ("accent1", "4F81BD"), ("accent2", "C0504D"),
             ("accent3", "9BBB59"), ("accent4", "8064A2"), ("accent5", "4BACC6"), ("accent6", "F79646"),
             ("hlink", "0000FF"), ("folHlink", "800080")))
         + '</a:clrScheme><a:fontScheme name="Office">'
         '<a:majorFont><a:latin typeface="Cambria"/><a:ea typeface=""/><a:cs typeface=""/></a:majorFont>'
         '<a:minorFont><a:latin typeface="Calibri"/><a:ea typeface=""/><a:cs typeface=""/></a:minorFont>'
         '</a:fontScheme><a:fmtScheme name="Office">'
         f'<a:fillStyleLst>{_PH * 3}</a:fillStyleLst>'
         '<a:lnStyleLst>' + "".join(f'<a:ln w="{w}">{_PH}</a:ln>' for w in (9525, 25400, 38100)) + '</a:lnStyleLst>'
         '<a:effectStyleLst>' + '<a:effectStyle><a:effectLst/></a:effectStyle>' * 3 + '</a:effectStyleLst>'
         f'<a:bgFillStyleLst>{_PH * 3}</a:bgFillStyleLst>'
         '</a:fmtScheme></a:themeElements><a:objectDefaults/><a:extraClrSchemeLst/></a:theme>')
# Document properties, with no dates: the same input gives the same bytes.
APP = (XML_HEAD + '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties" '
       'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"><Application>xlgpt</Application>'
       '</Properties>')
CORE = (XML_HEAD + '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><dc:creator>xlgpt</dc:creator></cp:coreProperties>')


# Charts, written as XlsxWriter writes a line chart. A sheet with charts has one drawing part that anchors
# them; charts and drawings are numbered across the book. A book without charts gets none of these parts.
CHART_NS = "http://schemas.openxmlformats.org/drawingml/2006/chart"
SHEET_DRAWING = "http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"


def _title(text, rotated=False):
    body = '<a:bodyPr rot="-5400000" vert="horz"/>' if rotated else "<a:bodyPr/>"
    return (f'<c:title><c:tx><c:rich>{body}<a:lstStyle/><a:p><a:pPr><a:defRPr/></a:pPr><a:r><a:rPr lang="en-US"/>'
            f'<a:t>{xml_text(text)}</a:t></a:r></a:p></c:rich></c:tx><c:layout/><c:overlay val="0"/></c:title>')


def _num_ref(ref, cache=None):
    xml = f"<c:numRef><c:f>{escape(ref)}</c:f>"
    if cache is not None:  # a point that is not a finite number (an error) is left out: a gap in the line
        xml += (f'<c:numCache><c:formatCode>General</c:formatCode><c:ptCount val="{len(cache)}"/>'
                + "".join(f'<c:pt idx="{i}"><c:v>{float(v)!r}</c:v></c:pt>'
                          for i, v in enumerate(cache) if np.isfinite(float(v)))
                + "</c:numCache>")
    return xml + "</c:numRef>"


def chart_xml(chart):
    """A line chart of one series: no legend (the title names it), no markers, a category and a value axis."""
    cat, val = 50010001, 50010002  # axis ids, as XlsxWriter numbers them
    name = f"<c:tx><c:v>{xml_text(chart.series_name)}</c:v></c:tx>" if chart.series_name else ""
    axis = ('<c:axId val="{}"/><c:scaling><c:orientation val="minMax"/></c:scaling><c:delete val="0"/>'
            '<c:axPos val="{}"/>')
    ticks = ('<c:numFmt formatCode="General" sourceLinked="1"/><c:tickLblPos val="nextTo"/><c:crossAx val="{}"/>'
             '<c:crosses val="autoZero"/>')
    return (XML_HEAD + f'<c:chartSpace xmlns:c="{CHART_NS}" xmlns:a="{DRAWING}" xmlns:r="{REL}"><c:lang val="en-US"/>'
            f"<c:chart>{_title(chart.title)}<c:autoTitleDeleted val=\"0\"/><c:plotArea><c:layout/>"
            '<c:lineChart><c:grouping val="standard"/><c:varyColors val="0"/>'
            f'<c:ser><c:idx val="0"/><c:order val="0"/>{name}<c:marker><c:symbol val="none"/></c:marker>'
            f"<c:cat>{_num_ref(chart.categories)}</c:cat><c:val>{_num_ref(chart.values, chart.cache)}</c:val>"
            f'<c:smooth val="0"/></c:ser><c:marker val="1"/><c:axId val="{cat}"/><c:axId val="{val}"/></c:lineChart>'
            f"<c:catAx>{axis.format(cat, 'b')}{_title(chart.x_title) if chart.x_title else ''}{ticks.format(val)}"
            '<c:auto val="1"/><c:lblAlgn val="ctr"/><c:lblOffset val="100"/><c:noMultiLvlLbl val="0"/></c:catAx>'
            f"<c:valAx>{axis.format(val, 'l')}<c:majorGridlines/>{_title(chart.y_title, True) if chart.y_title else ''}"
            f'{ticks.format(cat)}<c:crossBetween val="between"/></c:valAx></c:plotArea>'
            '<c:plotVisOnly val="1"/><c:dispBlanksAs val="gap"/></c:chart></c:chartSpace>')


def _marker(row, col):
    """A corner of a drawing's anchor: the top-left of a cell, both 0-based."""
    return f"<xdr:col>{col}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{row}</xdr:row><xdr:rowOff>0</xdr:rowOff>"


def drawing_xml(charts):
    """The drawing of one sheet: chart k (1-based) fills its anchor cells and is the drawing's rId k."""
    def anchor(k, chart):
        top, left, bottom, right = chart.anchor  # the end corner is the cell past the area, so the area is covered
        return (f"<xdr:twoCellAnchor><xdr:from>{_marker(top - 1, left - 1)}</xdr:from>"
                f"<xdr:to>{_marker(bottom, right)}</xdr:to>"
                f'<xdr:graphicFrame macro=""><xdr:nvGraphicFramePr><xdr:cNvPr id="{k + 1}" name="Chart {k}"/>'
                '<xdr:cNvGraphicFramePr/></xdr:nvGraphicFramePr><xdr:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/>'
                f'</xdr:xfrm><a:graphic><a:graphicData uri="{CHART_NS}"><c:chart xmlns:c="{CHART_NS}" r:id="rId{k}"/>'
                "</a:graphicData></a:graphic></xdr:graphicFrame><xdr:clientData/></xdr:twoCellAnchor>")
    return (XML_HEAD + f'<xdr:wsDr xmlns:xdr="{SHEET_DRAWING}" xmlns:a="{DRAWING}" xmlns:r="{REL}">'
            + "".join(anchor(k, c) for k, c in enumerate(charts, 1)) + "</xdr:wsDr>")


def _rels(*targets):
    """A relationships part: (type, target) pairs, as rId1, rId2, ..."""
    return (XML_HEAD + f'<Relationships xmlns="{PKG_REL}">'
            + "".join(f'<Relationship Id="rId{k}" Type="{REL}/{kind}" Target="{target}"/>'
                      for k, (kind, target) in enumerate(targets, 1)) + "</Relationships>")


def chart_parts(sheets):
    """{part name: XML} of every sheet's drawing and charts, and the content types they need."""
    parts, types, n = {}, [], 0
    drawn = [(i, s) for i, s in enumerate(sheets, 1) if s.charts]
    for d, (i, sheet) in enumerate(drawn, 1):
        numbers = range(n + 1, n + len(sheet.charts) + 1)
        n += len(sheet.charts)
        parts[f"xl/worksheets/_rels/sheet{i}.xml.rels"] = _rels(("drawing", f"../drawings/drawing{d}.xml"))
        parts[f"xl/drawings/drawing{d}.xml"] = drawing_xml(sheet.charts)
        charts = [("chart", f"../charts/chart{k}.xml") for k in numbers]
        parts[f"xl/drawings/_rels/drawing{d}.xml.rels"] = _rels(*charts)
        types.append(f'<Override PartName="/xl/drawings/drawing{d}.xml" '
                     'ContentType="application/vnd.openxmlformats-officedocument.drawing+xml"/>')
        for k, chart in zip(numbers, sheet.charts):
            parts[f"xl/charts/chart{k}.xml"] = chart_xml(chart)
            types.append(f'<Override PartName="/xl/charts/chart{k}.xml" '
                         'ContentType="application/vnd.openxmlformats-officedocument.drawingml.chart+xml"/>')
    return parts, "".join(types)


def shared_strings(sheets):
    """The shared-strings table {text: index} of every text cell, in the order the sheets hold them.
    Text is labels and the vocabulary (thousands of strings, not millions), so one pass is cheap; sharing
    them is what Excel itself writes (it rewrites inline strings into this table on its first save)."""
    table = {}
    for sheet in sheets:
        for b in sheet.blocks:
            if isinstance(b, Cells):
                for row in b.rows:
                    for v in row:
                        if isinstance(v, str) and not isinstance(v, Formula) and v not in table:
                            table[v] = len(table)
    return table


def _strings_xml(table):
    return (XML_HEAD + f'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="{len(table)}">'
            + "".join(f'<si><t xml:space="preserve">{xml_text(t)}</t></si>' for t in table) + "</sst>")


def _write_parts(zf, sheets, names, progress, level, calc_pr):
    n = len(sheets)
    strings = shared_strings(sheets)
    charts, chart_types = chart_parts(sheets)
    parts = {"styles": "styles.xml", "theme": "theme/theme1.xml"} | ({"sharedStrings": "sharedStrings.xml"} if strings else {})
    static = {
        "[Content_Types].xml": XML_HEAD + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{CT}.sheet.main+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{CT}.styles+xml"/>'
        '<Override PartName="/xl/theme/theme1.xml" ContentType="application/vnd.openxmlformats-officedocument.theme+xml"/>'
        + (f'<Override PartName="/xl/sharedStrings.xml" ContentType="{CT}.sharedStrings+xml"/>' if strings else "")
        + '<Override PartName="/docProps/app.xml" ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>'
        '<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        + "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{CT}.worksheet+xml"/>'
                  for i in range(1, n + 1)) + chart_types + "</Types>",
        "_rels/.rels": XML_HEAD + f'<Relationships xmlns="{PKG_REL}">'
        f'<Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/>'
        f'<Relationship Id="rId2" Type="{PKG_REL}/metadata/core-properties" Target="docProps/core.xml"/>'
        f'<Relationship Id="rId3" Type="{REL}/extended-properties" Target="docProps/app.xml"/></Relationships>',
        "docProps/app.xml": APP,
        "docProps/core.xml": CORE,
        "xl/workbook.xml": XML_HEAD + f"<workbook {NS}><bookViews><workbookView activeTab=\"0\"/></bookViews><sheets>"
        + "".join(f'<sheet name="{escape(s.name)}" sheetId="{i}" r:id="rId{i}"/>' for i, s in enumerate(sheets, 1))
        + "</sheets><definedNames>"
        + "".join(f'<definedName name="{k}">{escape(r.ref())}</definedName>' for k, r in sorted(names.items()))
        + "</definedNames>" + calc_pr + "</workbook>",
        "xl/_rels/workbook.xml.rels": XML_HEAD + f'<Relationships xmlns="{PKG_REL}">'
        + "".join(f'<Relationship Id="rId{i}" Type="{REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
                  for i in range(1, n + 1))
        + "".join(f'<Relationship Id="rId{n + k}" Type="{REL}/{kind}" Target="{target}"/>'
                  for k, (kind, target) in enumerate(parts.items(), 1)) + "</Relationships>",
        "xl/styles.xml": STYLES,
        "xl/theme/theme1.xml": THEME,
    }
    if strings:
        static["xl/sharedStrings.xml"] = _strings_xml(strings)
    static |= charts
    for name, text in static.items():
        with _member(zf, name, level) as f:
            f.write(text.encode())
    big = sum(s.extent()[0] * s.extent()[1] for s in sheets) > PARALLEL_CELLS and os.cpu_count() > 1
    # forked workers get the sheets through the initializer's arguments, which fork does not copy or pickle
    pool = multiprocessing.get_context("fork").Pool(os.cpu_count(), _start_worker, (sheets, strings)) if big else None
    try:
        for i, sheet in enumerate(sheets, 1):
            tasks = [(i - 1, start, stop) for start, stop in sheet.chunks()]
            formatted = (pool.imap(_format_chunk, tasks) if pool else
                         (_format(sheets, strings, task) for task in tasks))
            with _member(zf, f"xl/worksheets/sheet{i}.xml", level) as f:
                f.write(_sheet_head(sheet).encode())
                for (_, _, stop), data in zip(tasks, formatted):  # in order: the bytes never depend on timing
                    f.write(data)
                    if progress:
                        progress(sheet, stop - 1)
                f.write(_sheet_tail(sheet).encode())
    except BaseException:
        if pool:  # interrupted: a worker killed mid-write may hold the result queue's lock, on which
            pool._worker_handler._state = multiprocessing.pool.TERMINATE  # no replacement workers
            for worker in pool._pool:  # terminate() would wait forever; kill them and let the pool go
                worker.kill()
            pool._terminate.cancel()
            pool = None
        raise
    finally:
        if pool:
            pool.terminate()


def _format(sheets, strings, task):
    """The XML bytes of rows [start, stop) of sheet `index`."""
    index, start, stop = task
    return "".join(sheets[index].rows_xml(start, stop, strings)).encode()


_WORKER_BOOK = None  # in a forked writer worker only: (sheets, strings)


def _start_worker(sheets, strings):
    """A forked worker keeps the book to format, and leaves interruptions to the parent: Ctrl-C and a hang-up
    (sent to the whole foreground group) are ignored here, so they print one line, not a traceback per
    worker, and a parent that ignores SIGHUP (nohup) keeps its workers; SIGTERM (pool.terminate) just ends it."""
    import signal

    global _WORKER_BOOK
    _WORKER_BOOK = (sheets, strings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _format_chunk(task):
    return _format(*_WORKER_BOOK, task)


def copy_with_cell(src, dst, sheet_index, row, col, value, style=0):
    """Copy a workbook this writer made, with one cell of sheet `sheet_index` (1-based) replaced by `value`
    (text, number or Formula)."""
    copy_with_cells(src, dst, {(sheet_index, row, col): value}, style)


def copy_with_cells(src, dst, cells, style=0):
    """Copy a workbook this writer made with cells replaced: {(sheet index (1-based), row, col): value}.
    Streams every part it does not change, so it suits books of any size."""
    import re
    import shutil

    from xlgpt.safefile import atomic_file

    by_member = {}
    for (sheet_index, row, col), value in cells.items():
        by_member.setdefault(f"xl/worksheets/sheet{sheet_index}.xml", {})[cell_name(row, col)] = value
    with zipfile.ZipFile(src) as zin, atomic_file(dst) as copy, zipfile.ZipFile(copy, "w") as zout:
        for info in zin.infolist():
            with zin.open(info) as f, _member(zout, info.filename, 1) as out:
                if info.filename not in by_member:
                    shutil.copyfileobj(f, out, 1 << 20)
                    continue
                xml = f.read().decode()
                for ref, value in by_member[info.filename].items():
                    cell = re.compile(rf'<c r="{ref}"(?:[^>]*?/>|[^>]*>.*?</c>)', re.S)
                    new = _value_xml(value, style, ref)  # text goes inline: the shared strings stay as they were
                    xml, n = cell.subn(lambda m: new, xml, count=1)
                    if n != 1:
                        raise XlgptError(f"{src}: cell {ref} of {info.filename} was not found")
                out.write(xml.encode())
