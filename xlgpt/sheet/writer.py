"""A small streaming .xlsx writer: rows go straight into the zip, no Python object per cell.

openpyxl's write-only mode manages ~0.1M cells/s; weights are the bulk of a GPT-2 book, so numeric blocks are
turned into text with NumPy (shortest float32 decimals, decimals.py) and joined as strings. A big book's sheets are
formatted and deflated in pieces by the parent and forked workers together, and written in order (deflate.py).
"""

import contextlib
import gc
import multiprocessing
import multiprocessing.pool
import os
import re
import shutil
import signal
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from xlgpt.package import XlgptError
from xlgpt.safefile import announce, atomic_file
from xlgpt.sheet.cells import Cells, Formula, cell_name, value_xml, xml_text
from xlgpt.sheet.deflate import FAST_BYTES_PER_CELL, FINAL_BLOCK, crc32_combine, deflated
from xlgpt.sheet.limits import check_formulas
from xlgpt.sheet.styles import TAB_COLOURS, styles_xml

# LibreOffice 7.4 cannot open an .xlsx larger than 2 GiB: a book that would pass it deflated fast is deflated small
# (deflate.py).
LIBREOFFICE_MAX_BYTES = 2**31
PARALLEL_CELLS = 2_000_000  # below this, forking workers costs more than it saves


NS = (
    'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
)
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
        xml.append(
            f'<sheetViews><sheetView workbookViewId="0"><pane{split} topLeftCell="{cell_name(r, c)}" '
            f'activePane="bottomRight" state="frozen"/></sheetView></sheetViews>'
        )
    if sheet.widths:
        xml.append(
            "<cols>"
            + "".join(
                f'<col min="{c}" max="{c}" width="{w}" customWidth="1"/>' for c, w in sorted(sheet.widths.items())
            )
            + "</cols>"
        )
    xml.append("<sheetData>")
    return "".join(xml)


def sheet_tail(sheet):
    """After the cells: conditional formats (heatmaps, greyed padding), then links inside the book."""
    xml = ["</sheetData>"]
    for priority, (where, rule) in enumerate(sheet.conditional, 1):
        xml.append(f'<conditionalFormatting sqref="{where}">{rule.format(priority=priority)}</conditionalFormatting>')
    if sheet.links:
        xml.append(
            "<hyperlinks>"
            + "".join(
                f'<hyperlink ref="{cell}" location="{escape(location, {chr(34): "&quot;"})}"/>'
                for cell, location in sheet.links
            )
            + "</hyperlinks>"
        )
    if sheet.charts:  # CT_Worksheet puts the drawing after hyperlinks and page setup; its part is the sheet's rId1
        xml.append('<drawing r:id="rId1"/>')
    return "".join(xml) + "</worksheet>"


@contextlib.contextmanager
def _new_zip(path):
    """A zip written to `path` atomically. Interrupted (an error, Ctrl-C), it is abandoned without its closing
    records: zipfile's close() would raise over a part still open for writing, in place of the interruption."""
    with atomic_file(path) as f:
        zf = zipfile.ZipFile(f, "w")
        try:
            yield zf
        except BaseException:
            zf.fp = None  # close() returns at once; atomic_file discards the file
            raise
        zf.close()


def _info(name):
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed time: same input, same bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _member(zf, name, level=6):
    info = _info(name)
    setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", level)
    return zf.open(info, "w", force_zip64=True)


def _deflated_member(zf, name, pieces):
    """A member of `zf` made of deflated pieces (deflate.py: (bytes, CRC-32, length) each), stored as zipfile's own
    writer stores a member: its header written first, then again with the sizes and CRC once they are known."""
    info = _info(name)
    info.external_attr = 0o600 << 16  # rw-------, as zipfile gives its members
    info.CRC = info.compress_size = 0
    info.header_offset = zf.fp.tell()
    zf.fp.write(info.FileHeader(zip64=True))
    start, crc, size = zf.fp.tell(), 0, 0
    for data, piece_crc, length in pieces:
        zf.fp.write(data)
        crc, size = crc32_combine(crc, piece_crc, length), size + length
    zf.fp.write(FINAL_BLOCK)
    info.CRC, info.file_size, info.compress_size = crc, size, zf.fp.tell() - start
    zf.start_dir = zf.fp.tell()  # where the next member (or the central directory) goes
    zf.fp.seek(info.header_offset)
    zf.fp.write(info.FileHeader(zip64=True))
    zf.fp.seek(zf.start_dir)
    zf.filelist.append(info)
    zf.NameToInfo[name] = info


def needs_small(sheets):
    """Would the book deflated fast pass LibreOffice's limit?"""
    cells = sum(sum(s.cell_counts()) for s in sheets)  # constants, and formulas with their cached values
    return cells * FAST_BYTES_PER_CELL > 0.9 * LIBREOFFICE_MAX_BYTES


def write_workbook(path, sheets, names, progress=None, calculation="auto"):
    """Write sheets (in order) and defined names {name: layout.Rect} to `path`, atomically.

    `progress(sheet, rows_done)` is called as rows are written, for progress bars. `calculation`: the
    book's calculation mode, "auto" or "manual" (see CALC_PR). A formula beyond Excel's limits is an error
    before anything is written (limits.py).
    """

    path = Path(path)
    check_formulas(sheets)
    with _new_zip(path) as zf, _frozen_heap():
        _write_parts(zf, sheets, names, progress, needs_small(sheets), CALC_PR[calculation])


@contextlib.contextmanager
def _frozen_heap():
    """The book's millions of objects kept out of garbage collection while it is written (and in the forked workers):
    each collection would walk them all, and writing makes enough small objects to start one every few rows."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# The calculation mode. auto: Excel computes every formula on opening (the file carries no results) and after
# each edit. manual: nothing until F9 (Excel ignores fullCalcOnLoad in manual mode), nor on saving
# (calcOnSave="0"), so a book of millions of formula cells opens at once. calcId: Excel 2019's engine; a
# lower one makes Excel recalculate on opening and ask to save on closing.
CALC_PR = {
    "auto": '<calcPr calcId="191029" fullCalcOnLoad="1"/>',
    "manual": '<calcPr calcId="191029" calcMode="manual" calcOnSave="0"/>',
}


# A minimal Office theme (the 2007 colours and fonts; the formatting scheme holds the three entries of
# each list the schema asks for). Excel expects a workbook to have one; without it, validators report
# an error and Excel rewrites the file.
DRAWING = "http://schemas.openxmlformats.org/drawingml/2006/main"
_PH = '<a:solidFill><a:schemeClr val="phClr"/></a:solidFill>'
THEME = (
    XML_HEAD + f'<a:theme xmlns:a="{DRAWING}" name="Office Theme"><a:themeElements>'
    '<a:clrScheme name="Office"><a:dk1><a:sysClr val="windowText" lastClr="000000"/></a:dk1>'
    '<a:lt1><a:sysClr val="window" lastClr="FFFFFF"/></a:lt1>'
    + "".join(
        f'<a:{k}><a:srgbClr val="{v}"/></a:{k}>'
        for k, v in (
            ("dk2", "1F497D"),
            ("lt2", "EEECE1"),
            ("accent1", "4F81BD"),
            ("accent2", "C0504D"),
            ("accent3", "9BBB59"),
            ("accent4", "8064A2"),
            ("accent5", "4BACC6"),
            ("accent6", "F79646"),
            ("hlink", "0000FF"),
            ("folHlink", "800080"),
        )
    )
    + '</a:clrScheme><a:fontScheme name="Office">'
    '<a:majorFont><a:latin typeface="Cambria"/><a:ea typeface=""/><a:cs typeface=""/></a:majorFont>'
    '<a:minorFont><a:latin typeface="Calibri"/><a:ea typeface=""/><a:cs typeface=""/></a:minorFont>'
    '</a:fontScheme><a:fmtScheme name="Office">'
    f"<a:fillStyleLst>{_PH * 3}</a:fillStyleLst>"
    "<a:lnStyleLst>" + "".join(f'<a:ln w="{w}">{_PH}</a:ln>' for w in (9525, 25400, 38100)) + "</a:lnStyleLst>"
    "<a:effectStyleLst>" + "<a:effectStyle><a:effectLst/></a:effectStyle>" * 3 + "</a:effectStyleLst>"
    f"<a:bgFillStyleLst>{_PH * 3}</a:bgFillStyleLst>"
    "</a:fmtScheme></a:themeElements><a:objectDefaults/><a:extraClrSchemeLst/></a:theme>"
)
# Document properties, with no dates: the same input gives the same bytes.
APP = (
    XML_HEAD + '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties" '
    'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"><Application>xlgpt</Application>'
    "</Properties>"
)
CORE = (
    XML_HEAD + '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><dc:creator>xlgpt</dc:creator></cp:coreProperties>'
)


# Charts, written as XlsxWriter writes a line chart. A sheet with charts has one drawing part that anchors
# them; charts and drawings are numbered across the book. A book without charts gets none of these parts.
CHART_NS = "http://schemas.openxmlformats.org/drawingml/2006/chart"
SHEET_DRAWING = "http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing"
PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"


def _title(text, rotated=False):
    body = '<a:bodyPr rot="-5400000" vert="horz"/>' if rotated else "<a:bodyPr/>"
    return (
        f'<c:title><c:tx><c:rich>{body}<a:lstStyle/><a:p><a:pPr><a:defRPr/></a:pPr><a:r><a:rPr lang="en-US"/>'
        f'<a:t>{xml_text(text)}</a:t></a:r></a:p></c:rich></c:tx><c:layout/><c:overlay val="0"/></c:title>'
    )


def _num_ref(ref, cache=None):
    xml = f"<c:numRef><c:f>{escape(ref)}</c:f>"
    if cache is not None:  # a point that is not a finite number (an error) is left out: a gap in the line
        xml += (
            f'<c:numCache><c:formatCode>General</c:formatCode><c:ptCount val="{len(cache)}"/>'
            + "".join(
                f'<c:pt idx="{i}"><c:v>{float(v)!r}</c:v></c:pt>' for i, v in enumerate(cache) if np.isfinite(float(v))
            )
            + "</c:numCache>"
        )
    return xml + "</c:numRef>"


def chart_xml(chart):
    """A line chart of one series: no legend (the title names it), no markers, a category and a value axis."""
    cat, val = 50010001, 50010002  # axis ids, as XlsxWriter numbers them
    name = f"<c:tx><c:v>{xml_text(chart.series_name)}</c:v></c:tx>" if chart.series_name else ""
    axis = (
        '<c:axId val="{}"/><c:scaling><c:orientation val="minMax"/></c:scaling><c:delete val="0"/><c:axPos val="{}"/>'
    )
    ticks = (
        '<c:numFmt formatCode="General" sourceLinked="1"/><c:tickLblPos val="nextTo"/><c:crossAx val="{}"/>'
        '<c:crosses val="autoZero"/>'
    )
    return (
        XML_HEAD + f'<c:chartSpace xmlns:c="{CHART_NS}" xmlns:a="{DRAWING}" xmlns:r="{REL}"><c:lang val="en-US"/>'
        f'<c:chart>{_title(chart.title)}<c:autoTitleDeleted val="0"/><c:plotArea><c:layout/>'
        '<c:lineChart><c:grouping val="standard"/><c:varyColors val="0"/>'
        f'<c:ser><c:idx val="0"/><c:order val="0"/>{name}<c:marker><c:symbol val="none"/></c:marker>'
        f"<c:cat>{_num_ref(chart.categories)}</c:cat><c:val>{_num_ref(chart.values, chart.cache)}</c:val>"
        f'<c:smooth val="0"/></c:ser><c:marker val="1"/><c:axId val="{cat}"/><c:axId val="{val}"/></c:lineChart>'
        f"<c:catAx>{axis.format(cat, 'b')}{_title(chart.x_title) if chart.x_title else ''}{ticks.format(val)}"
        '<c:auto val="1"/><c:lblAlgn val="ctr"/><c:lblOffset val="100"/><c:noMultiLvlLbl val="0"/></c:catAx>'
        f"<c:valAx>{axis.format(val, 'l')}<c:majorGridlines/>{_title(chart.y_title, True) if chart.y_title else ''}"
        f'{ticks.format(cat)}<c:crossBetween val="between"/></c:valAx></c:plotArea>'
        '<c:plotVisOnly val="1"/><c:dispBlanksAs val="gap"/></c:chart></c:chartSpace>'
    )


def _marker(row, col):
    """A corner of a drawing's anchor: the top-left of a cell, both 0-based."""
    return f"<xdr:col>{col}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{row}</xdr:row><xdr:rowOff>0</xdr:rowOff>"


def drawing_xml(charts):
    """The drawing of one sheet: chart k (1-based) fills its anchor cells and is the drawing's rId k."""

    def anchor(k, chart):
        top, left, bottom, right = chart.anchor  # the end corner is the cell past the area, so the area is covered
        return (
            f"<xdr:twoCellAnchor><xdr:from>{_marker(top - 1, left - 1)}</xdr:from>"
            f"<xdr:to>{_marker(bottom, right)}</xdr:to>"
            f'<xdr:graphicFrame macro=""><xdr:nvGraphicFramePr><xdr:cNvPr id="{k + 1}" name="Chart {k}"/>'
            '<xdr:cNvGraphicFramePr/></xdr:nvGraphicFramePr><xdr:xfrm><a:off x="0" y="0"/><a:ext cx="0" cy="0"/>'
            f'</xdr:xfrm><a:graphic><a:graphicData uri="{CHART_NS}"><c:chart xmlns:c="{CHART_NS}" r:id="rId{k}"/>'
            "</a:graphicData></a:graphic></xdr:graphicFrame><xdr:clientData/></xdr:twoCellAnchor>"
        )

    return (
        XML_HEAD
        + f'<xdr:wsDr xmlns:xdr="{SHEET_DRAWING}" xmlns:a="{DRAWING}" xmlns:r="{REL}">'
        + "".join(anchor(k, c) for k, c in enumerate(charts, 1))
        + "</xdr:wsDr>"
    )


def _rels(*targets):
    """A relationships part: (type, target) pairs, as rId1, rId2, ..."""
    return (
        XML_HEAD
        + f'<Relationships xmlns="{PKG_REL}">'
        + "".join(
            f'<Relationship Id="rId{k}" Type="{REL}/{kind}" Target="{target}"/>'
            for k, (kind, target) in enumerate(targets, 1)
        )
        + "</Relationships>"
    )


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
        types.append(
            f'<Override PartName="/xl/drawings/drawing{d}.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.drawing+xml"/>'
        )
        for k, chart in zip(numbers, sheet.charts):
            parts[f"xl/charts/chart{k}.xml"] = chart_xml(chart)
            types.append(
                f'<Override PartName="/xl/charts/chart{k}.xml" '
                'ContentType="application/vnd.openxmlformats-officedocument.drawingml.chart+xml"/>'
            )
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
    return (
        XML_HEAD
        + f'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="{len(table)}">'
        + "".join(f'<si><t xml:space="preserve">{xml_text(t)}</t></si>' for t in table)
        + "</sst>"
    )


def _write_parts(zf, sheets, names, progress, small, calc_pr):
    n = len(sheets)
    strings = shared_strings(sheets)
    charts, chart_types = chart_parts(sheets)
    parts = {"styles": "styles.xml", "theme": "theme/theme1.xml"} | (
        {"sharedStrings": "sharedStrings.xml"} if strings else {}
    )
    static = {
        "[Content_Types].xml": XML_HEAD + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{CT}.sheet.main+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{CT}.styles+xml"/>'
        '<Override PartName="/xl/theme/theme1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.theme+xml"/>'
        + (f'<Override PartName="/xl/sharedStrings.xml" ContentType="{CT}.sharedStrings+xml"/>' if strings else "")
        + '<Override PartName="/docProps/app.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        + "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{CT}.worksheet+xml"/>'
            for i in range(1, n + 1)
        )
        + chart_types
        + "</Types>",
        "_rels/.rels": XML_HEAD + f'<Relationships xmlns="{PKG_REL}">'
        f'<Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/>'
        f'<Relationship Id="rId2" Type="{PKG_REL}/metadata/core-properties" Target="docProps/core.xml"/>'
        f'<Relationship Id="rId3" Type="{REL}/extended-properties" Target="docProps/app.xml"/></Relationships>',
        "docProps/app.xml": APP,
        "docProps/core.xml": CORE,
        "xl/workbook.xml": XML_HEAD
        + f'<workbook {NS}><bookViews><workbookView activeTab="0"/></bookViews><sheets>'
        + "".join(f'<sheet name="{escape(s.name)}" sheetId="{i}" r:id="rId{i}"/>' for i, s in enumerate(sheets, 1))
        + "</sheets><definedNames>"
        + "".join(f'<definedName name="{k}">{escape(r.ref())}</definedName>' for k, r in sorted(names.items()))
        + "</definedNames>"
        + calc_pr
        + "</workbook>",
        "xl/_rels/workbook.xml.rels": XML_HEAD
        + f'<Relationships xmlns="{PKG_REL}">'
        + "".join(
            f'<Relationship Id="rId{i}" Type="{REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, n + 1)
        )
        + "".join(
            f'<Relationship Id="rId{n + k}" Type="{REL}/{kind}" Target="{target}"/>'
            for k, (kind, target) in enumerate(parts.items(), 1)
        )
        + "</Relationships>",
        "xl/styles.xml": STYLES,
        "xl/theme/theme1.xml": THEME,
    }
    if strings:
        static["xl/sharedStrings.xml"] = _strings_xml(strings)
    static |= charts
    for name, text in static.items():
        with _member(zf, name) as f:
            f.write(text.encode())
    big = sum(s.extent()[0] * s.extent()[1] for s in sheets) > PARALLEL_CELLS and os.cpu_count() > 1
    # Forked workers get the sheets through the initializer's arguments, which fork does not copy or pickle. The
    # parent does a share of the pieces itself: one process fewer holding its own copy of the pages it touches.
    workers = os.cpu_count() - 1 if big else 0
    pool = multiprocessing.get_context("fork").Pool(workers, _start_worker, (sheets, strings)) if workers else None
    try:
        tasks = [[(i, start, stop, small) for start, stop in sheet.chunks()] for i, sheet in enumerate(sheets)]
        every = [task for sheet_tasks in tasks for task in sheet_tasks]  # the workers go on from sheet to sheet
        theirs = pool.imap(_deflate_chunk, [t for k, t in enumerate(every) if k % (workers + 1)]) if pool else None
        pieces = (
            next(theirs) if k % (workers + 1) else _deflate(sheets, strings, task) for k, task in enumerate(every)
        )
        for i, sheet in enumerate(sheets):
            member = _sheet_pieces(sheet, tasks[i], pieces, small, progress)
            _deflated_member(zf, f"xl/worksheets/sheet{i + 1}.xml", member)
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


def _sheet_pieces(sheet, tasks, pieces, small, progress):
    """A sheet's XML deflated in pieces: its head, its `tasks`' rows taken in order from `pieces` (so the bytes never
    depend on timing), its tail."""
    yield deflated(_sheet_head(sheet).encode(), small)
    for index, start, stop, _ in tasks:
        yield next(pieces)
        if index == 0 and start == 1:  # the book's first rows are in the temporary file, the workers at the next
            announce("writing")
        if progress:
            progress(sheet, stop - 1)
    yield deflated(sheet_tail(sheet).encode(), small)


def _deflate(sheets, strings, task):
    """Rows [start, stop) of sheet `index`, as XML, deflated (deflate.py)."""
    index, start, stop, small = task
    return deflated("".join(sheets[index].rows_xml(start, stop, strings)).encode(), small)


_WORKER_BOOK = None  # in a forked writer worker only: (sheets, strings)


def _start_worker(sheets, strings):
    """A forked worker keeps the book to format, and leaves interruptions to the parent: Ctrl-C and a hang-up
    (sent to the whole foreground group) are ignored here, so they print one line, not a traceback per
    worker, and a parent that ignores SIGHUP (nohup) keeps its workers; SIGTERM (pool.terminate) just ends it."""
    global _WORKER_BOOK
    _WORKER_BOOK = (sheets, strings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _deflate_chunk(task):
    return _deflate(*_WORKER_BOOK, task)


def copy_with_cell(src, dst, sheet_index, row, col, value, style=0):
    """Copy a workbook this writer made, with one cell of sheet `sheet_index` (1-based) replaced by `value`
    (text, number or Formula)."""
    copy_with_cells(src, dst, {(sheet_index, row, col): value}, style)


def copy_with_cells(src, dst, cells, style=0):
    """Copy a workbook this writer made with cells replaced: {(sheet index (1-based), row, col): value, or
    (value, its own style)}. Streams every part it does not change, so it suits books of any size."""
    by_member = {}
    for (sheet_index, row, col), value in cells.items():
        by_member.setdefault(f"xl/worksheets/sheet{sheet_index}.xml", {})[cell_name(row, col)] = value
    with zipfile.ZipFile(src) as zin, _new_zip(dst) as zout:
        for info in zin.infolist():
            with zin.open(info) as f, _member(zout, info.filename, 1) as out:
                if info.filename not in by_member:
                    shutil.copyfileobj(f, out, 1 << 20)
                    continue
                xml = f.read().decode()
                for ref, value in by_member[info.filename].items():
                    cell = re.compile(rf'<c r="{ref}"(?:[^>]*?/>|[^>]*>.*?</c>)', re.S)
                    # text goes inline: the shared strings stay as they were
                    new = value_xml(*(value if isinstance(value, tuple) else (value, style)), ref)
                    xml, n = cell.subn(lambda m: new, xml, count=1)
                    if n != 1:
                        raise XlgptError(f"{src}: cell {ref} of {info.filename} was not found")
                out.write(xml.encode())
