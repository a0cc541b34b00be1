"""Prove a book computes and shows its results: everything in it is what the compiler writes.

eval recompiles the book in memory (template + checkpoint + tokenizer + the inputs the book records; nothing is
written) and compares, before any engine opens the file:
- the package's parts: exactly the ones the writer makes (no external links, macros, connections...), each of
  the fixed parts byte for byte as the writer writes it (content types, relationships, styles, theme, document
  properties), a training book's loss chart too;
- the workbook's settings (xl/workbook.xml): the tabs in order, every defined name with its target, and the
  calculation settings: precision as displayed (fullPrecision="0") or iterative calculation would change the
  results, and the calculation mode must be the one the book's About block records;
- every cell of every tab, streamed row by row against the rows the writer writes for the recompiled book:
  each formula (a constant where the compiler writes a formula, such as a forged logit, is refused, and so is
  a formula where it writes none), each constant (every weight is the checkpoint's value as the book writes
  it, the shortest float32 decimal; the Vocabulary, the merges, the byte and Unicode tables are the
  tokenizer's; every label), and how each cell is shown (its style: font, fill, number format), each row's
  format, the tab's columns and panes, and the conditional formats (heatmaps, greyed padding);
- input cells (yellow: token ids, Prompt, switches, steering, sampling) may hold any constant a person typed;
  the Prompt cell may also hold the formula xlgpt writes for text a plain cell cannot carry (checked when the
  book is read).

A difference in what a formula computes from is a NotCompiled (eval's MISMATCH, exit 1) naming the first cell
that differs, what it holds and what it should hold. A difference only in how something is shown (a number
format, a colour, a conditional format missing) does not change a result: it is kept as the book's display
difference (the first one), which eval reports as a verdict of its own.

The cached values (what a viewer that does not calculate shows, and what a manual book shows until F9) of the
cells eval reads are collected on the way, for eval to compare with what each engine computes.

The file's rows are compared as bytes with the writer's: a weights tab is the writer's bytes exactly, so almost
all of a book takes that path, and costs the writer's formatting of the weights (~1 µs a cell on one core; a
pool of two processes was slower: the rows come back through a pipe). A row of a computation tab differs from
the writer's (values=False) in the results its formulas cache: it is compared as bytes without them. Only a row
that still differs, or holds cached values eval reads, is parsed, cell by cell, to say how.
"""

import re
import tempfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import unescape

import numpy as np

from xlgpt.compile.backward import Training
from xlgpt.compile.build import compile_book, inputs_for
from xlgpt.compile.inputs import Contrast
from xlgpt.model.sae import sae_as_written
from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C
from xlgpt.sheet.cells import ArrayFormula, Cells, Formula, Sheet, cell_name, column_letter, quote_sheet
from xlgpt.sheet.read import read_member
from xlgpt.sheet.styles import INPUT, NUMBER_FORMATS, STYLE_LIST
from xlgpt.sheet.writer import _sheet_head, chart_parts, sheet_tail, write_workbook
from xlgpt.tokenizer.bpe import Capacity

MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
STATIC_PARTS = {
    "[Content_Types].xml",
    "_rels/.rels",
    "docProps/app.xml",
    "docProps/core.xml",
    "xl/workbook.xml",
    "xl/_rels/workbook.xml.rels",
    "xl/styles.xml",
    "xl/theme/theme1.xml",
    "xl/sharedStrings.xml",
}
# parts that only say how the book looks: a difference there is a display difference, not a mismatch
DISPLAY_PARTS = {"xl/styles.xml", "xl/theme/theme1.xml", "docProps/app.xml", "docProps/core.xml"}
# the elements the writer puts after a sheet's cells; anything else there (sheetCalcPr, dataValidations, extLst,
# scenarios, ...) is not xlgpt's
TAIL_ELEMENTS = {"conditionalFormatting", "hyperlinks", "drawing"}
BUILTIN_FORMATS = {0: "General", 1: "0", 2: "0.00", 3: "#,##0", 4: "#,##0.00", 9: "0%", 10: "0.00%", 11: "0.00E+00"}
STEERING_NOTE = "SteeringVector: "  # the Interventions tab's note of where the build took the vector from
MAX_ROW_BYTES = 64 << 20
MAX_DISPLAY = 20  # display differences kept


class NotCompiled(XlgptError):
    """The book's formulas are not the compiler's: eval's verdict is a mismatch (exit 1), not bad input."""


@dataclass
class Provenance:
    """What check_compiled found besides mismatches (which it raises): the differences in how the book shows
    something (the first MAX_DISPLAY; a cell's before a part's: the most precise first), and the cached values
    of the names it was asked for ({name: 2-D object array of float, str, CachedError or None: no value})."""

    displays: list = field(default_factory=list)
    cached: dict = field(default_factory=dict)

    @property
    def display(self):
        """The first display difference, or None."""
        return self.displays[0] if self.displays else None


class CachedError(str):
    """An error a cell caches as its result (#DIV/0!, #N/A)."""


def recompile(book, ckpt, tok, template=None):
    """(sheets, names, stages) the compiler writes for what `book` records: its checkpoint, its kind of input
    and its sizes, and what a training book carries from step to step (Adam's moments, the loss history). The
    input cells' values do not matter (they may differ). stages: each stage of the spec with its output's
    cells, in dataflow order (compile.lower)."""

    if book.typed:
        chars, nbytes, rounds, positions = book.about.capacity
        if not 1 <= positions <= ckpt.config.n_positions:
            raise XlgptError(
                f"{book.path.name}: the tokenizer capacity cells say {positions} positions; the model "
                f"has {ckpt.config.n_positions}"
            )
        text = tok.decode([0])
        inputs = inputs_for(ckpt, tok.encode(text), tok, text, positions, Capacity(chars, nbytes, rounds))
    else:
        patching = book.patching
        contrast = patching and Contrast(
            patching["corrupted"], patching[C.ANSWER_TOKEN], patching[C.FOIL_TOKEN], patching["heatmaps"]
        )
        inputs = inputs_for(ckpt, list(book.tokens), contrast=contrast)
    training = book.training and Training(
        book.training["targets"],
        book.training["optimizer"],
        moments=training_moments(book, ckpt),
        history=list(book.training["history"]),
    )
    sae = book.about.sae and sae_as_written(book.about.sae, ckpt.config)
    compiled, names = compile_book(ckpt, inputs, book.about, tok, template, sae=sae, training=training, values=False)
    return compiled.sheets(), names, compiled.stages


def from_layout(prefix, grids, tensors):
    """{tensor: array of its own shape} from the grids of the defined names that hold them (prefix + the
    weight's name, as its weights tab lays it out: transposed where that tab stores the transpose)."""
    out = {}
    for tensor, value in tensors.items():
        name, transposed = C.weight_name_in(grids, tensor, prefix)
        if name:
            grid = np.array(grids[name], dtype=float)
            out[tensor] = (grid.T if transposed else grid).reshape(np.shape(value))
    return out


def training_moments(book, ckpt):
    """A training book's Adam moments before the step, as its tabs hold them ({"m": {tensor: array}, "v": ...});
    None when it has none."""
    grids = book.training.get("moments") or {}
    if not grids:
        return None
    return {kind: from_layout(prefix, grids, ckpt.tensors) for kind, prefix in (("m", C.ADAM_M), ("v", C.ADAM_V))}


_REF = re.compile(r"([A-Z]{1,3})(\d+)")


def _col(letters):
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def _rc(ref):
    m = _REF.fullmatch(ref or "")
    if not m:
        return None
    return int(m.group(2)), _col(m.group(1))


def _parts(zf):
    """{sheet name: part name}, in the workbook's order, and {defined name: text}."""

    def xml(name):

        try:
            return ET.fromstring(read_member(zf, name))
        except ET.ParseError as e:
            raise XlgptError(f"{name}: malformed XML ({e})")

    rels = {r.get("Id"): r.get("Target") for r in xml("xl/_rels/workbook.xml.rels").iter(PKG_REL + "Relationship")}
    wb = xml("xl/workbook.xml")
    sheets = {}
    for s in wb.iter(MAIN + "sheet"):
        target = rels.get(s.get(REL_NS + "id"), "")
        sheets[s.get("name")] = target.lstrip("/") if target.startswith("/") else "xl/" + target
    names = {}
    for d in wb.iter(MAIN + "definedName"):
        key = d.get("name")
        if key in names or set(d.attrib) != {"name"}:  # a second, sheet-local or hidden definition could shadow ours
            raise NotCompiled(
                f"{zf.filename}: the defined name {key} is not the compiler's (defined twice, or with "
                f"{', '.join(sorted(set(d.attrib) - {'name'}))})"
            )
        names[key] = d.text or ""
    return sheets, names


def check_compiled(book, sheets, names, cached=()):
    """Raise NotCompiled naming the first thing in `book`'s file that computes from something else than the
    compiler's `sheets` and `names`; return a Provenance: the first display difference, and the cached values
    of the defined names in `cached`. A damaged file (corrupt compressed data) is bad input (XlgptError)."""
    try:
        with zipfile.ZipFile(book.path) as zf:
            return _check(zf, book, sheets, names, cached)
    except (zlib.error, zipfile.BadZipFile, EOFError) as e:
        raise XlgptError(f"{book.path}: a damaged workbook ({' '.join(str(e).split()) or type(e).__name__})")


def _check(zf, book, sheets, names, cached):
    path = book.path
    found = Provenance()

    later = []  # the parts' differences, reported after the cells'

    def display(message):
        if len(found.displays) < MAX_DISPLAY:
            found.displays.append(message)

    members = set(zf.namelist())
    charts = chart_parts(sheets)[0]  # a training book's loss curve
    allowed = STATIC_PARTS | set(charts) | {f"xl/worksheets/sheet{i}.xml" for i in range(1, len(sheets) + 1)}
    extra = sorted(members - allowed)
    if extra:
        raise NotCompiled(
            f"{path.name}: the part {extra[0]} is not one xlgpt writes (external links, macros "
            f"and connections are refused)"
        )
    for part, xml in charts.items():
        if part not in members or read_member(zf, part) != xml.encode():
            raise NotCompiled(f"{path.name}: the part {part} is not the compiler's")
    parts, defined = _parts(zf)
    if list(parts) != [s.name for s in sheets]:
        raise NotCompiled(
            f"{path.name}: the tabs are not the compiler's ({', '.join(parts)}); a book built "
            f"from another template needs it as --template (xlgpt generate's: "
            f"templates/gpt2-generate.toml)"
        )
    want_names = {k: r.ref() for k, r in names.items()}
    for k in sorted(set(defined) | set(want_names)):
        if defined.get(k) != want_names.get(k):
            raise NotCompiled(
                f"{path.name}: the defined name {k} is not the compiler's "
                f"({defined.get(k)!r}, the compiler's {want_names.get(k)!r})"
            )
    calculation = C.MANUAL if C.CALCULATION in names else C.AUTO
    for part, want in _static_parts(sheets, names, calculation).items():
        if part not in members:
            if part in DISPLAY_PARTS and part != "xl/styles.xml":
                later.append(f"{path.name}: no part {part}, which xlgpt writes")
                continue
            raise NotCompiled(f"{path.name}: no part {part}, which xlgpt writes")
        got = read_member(zf, part)
        if got == want:
            continue
        if part == "xl/workbook.xml":
            _compare_workbook(got, want, path.name, later.append)
        elif part in DISPLAY_PARTS:
            later.append(f"{part}: {_first_xml_difference(got, want)}")
        else:
            raise NotCompiled(f"{path.name}: the part {part} is not the compiler's")
    strings = _shared_strings(zf) if "xl/sharedStrings.xml" in members else []
    styles = _Styles(read_member(zf, "xl/styles.xml"))
    wanted = {name: book.names[name] for name in cached if name in book.names}
    found.cached = {name: np.full((r.height, r.width), None, dtype=object) for name, r in wanted.items()}
    for sheet in sheets:
        part = parts[sheet.name]
        if part not in members:
            raise XlgptError(f"{path.name}: the tab {sheet.name!r} has no part {part}")
        on_sheet = {name: r for name, r in wanted.items() if r.sheet == sheet.name}
        check = _SheetCheck(book, sheet, strings, styles, display, on_sheet, found.cached)
        with zf.open(part) as stream:
            check.run(_PartReader(stream, f"{path.name}: {part}"))
    for message in later:
        display(message)
    return found


# --- the fixed parts ----------------------------------------------------------------------------------


def _static_parts(sheets, names, calculation):
    """{part: bytes} of every part the writer writes besides the sheets, the shared strings and the charts, for
    these sheets, names and calculation mode: taken from a workbook written with the same tabs, names and
    charts and no cells (written in a temporary directory, in milliseconds)."""
    has_text = any(
        isinstance(v, str) and not isinstance(v, Formula)
        for s in sheets
        for b in s.blocks
        if isinstance(b, Cells)
        for row in b.rows
        for v in row
    )
    stubs = [Sheet(s.name, charts=s.charts) for s in sheets]
    if has_text:  # a book with text has a shared-strings part (and says so in its content types)
        stubs[0].blocks.append(Cells(1, 1, [["text"]]))
    with tempfile.TemporaryDirectory(prefix="xlgpt-provenance-") as tmp:
        stub = Path(tmp) / "stub.xlsx"
        write_workbook(stub, stubs, names, calculation=calculation)
        with zipfile.ZipFile(stub) as zf:
            return {
                part: zf.read(part) for part in zf.namelist() if part in STATIC_PARTS and part != "xl/sharedStrings.xml"
            }


def _local(tag):
    return tag.rsplit("}", 1)[-1]


def _element_text(el):
    attrs = "".join(f' {_local(k)}="{v}"' for k, v in el.attrib.items())
    return f"<{_local(el.tag)}{attrs}>"


def _first_xml_difference(got, want):
    """The first element (in document order) where two XML parts differ, as a phrase."""
    try:
        g, w = list(ET.fromstring(got).iter()), list(ET.fromstring(want).iter())
    except ET.ParseError as e:
        return f"malformed XML ({e})"
    for a, b in zip(g, w):
        if (a.tag, a.attrib, (a.text or "").strip()) != (b.tag, b.attrib, (b.text or "").strip()):
            return f"{_element_text(a)} where xlgpt writes {_element_text(b)}"
    if len(g) != len(w):
        return f"{abs(len(g) - len(w))} elements {'more' if len(g) > len(w) else 'fewer'} than xlgpt writes"
    return "not the bytes xlgpt writes"


_TRUE = ("1", "true")


def _compare_workbook(got, want, where, display):
    """xl/workbook.xml differs from the writer's: the tabs and names are compared already; a calculation
    setting that changes results, or an element xlgpt does not write, is a mismatch; the rest is display."""
    try:
        g, w = ET.fromstring(got), ET.fromstring(want)
    except ET.ParseError as e:
        raise NotCompiled(f"{where}: xl/workbook.xml is malformed ({e})")
    theirs = {_local(el.tag): el for el in w}
    for el in g:
        tag = _local(el.tag)
        if tag not in theirs:
            raise NotCompiled(f"{where}: xl/workbook.xml holds <{tag}>, which xlgpt does not write")
    mine = {_local(el.tag): el for el in g}
    calc = mine["calcPr"].attrib if "calcPr" in mine else {}
    expected = theirs["calcPr"].attrib if "calcPr" in theirs else {}
    if calc.get("fullPrecision", "1") not in _TRUE:
        raise NotCompiled(
            f'{where}: the workbook computes with precision as displayed (calcPr fullPrecision="'
            f'{calc["fullPrecision"]}"): Excel and LibreOffice would round every result to its format'
        )
    if calc.get("iterate", "0") in _TRUE:
        raise NotCompiled(
            f"{where}: the workbook turns iterative calculation on (calcPr iterate), which xlgpt never does"
        )
    mode, recorded = calc.get("calcMode", "auto"), expected.get("calcMode", "auto")
    if mode != recorded:
        raise NotCompiled(
            f"{where}: the workbook's calculation mode is {mode} (calcPr) where its About block records {recorded}"
        )
    if calc != expected:
        differ = sorted(k for k in set(calc) | set(expected) if calc.get(k) != expected.get(k))
        display(
            f"xl/workbook.xml: the calculation settings "
            f"({', '.join(f'{k}={calc.get(k)!r}' for k in differ)}) are not the compiler's "
            f"({', '.join(f'{k}={expected.get(k)!r}' for k in differ)})"
        )
    for tag, el in mine.items():
        if tag not in ("sheets", "definedNames", "calcPr") and ET.tostring(el) != ET.tostring(theirs[tag]):
            display(f"xl/workbook.xml: <{tag}> is not the compiler's")


def _shared_strings(zf):
    """The shared strings as [(text, formatted?)]: formatted when an entry is rich text (runs with their own
    fonts), which xlgpt never writes."""
    try:
        root = ET.fromstring(read_member(zf, "xl/sharedStrings.xml"))
    except ET.ParseError as e:
        raise XlgptError(f"xl/sharedStrings.xml: malformed XML ({e})")
    out = []
    for si in root.iter(MAIN + "si"):
        kids = list(si)
        plain = len(kids) == 1 and kids[0].tag == MAIN + "t" and not list(kids[0])
        runs = [t for r in si.findall(MAIN + "r") for t in r.findall(MAIN + "t")]
        shown = [k for k in kids if k.tag == MAIN + "t"] + runs
        text = "".join(t.text or "" for t in shown)  # the text and rich runs' texts, not the phonetic (rPh)
        out.append((text, not plain))
    return out


class _Styles:
    """The number format of each cell style (xf) of a styles part, to describe a style in a message."""

    def __init__(self, xml):
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            root = ET.Element("none")
        codes = {
            **BUILTIN_FORMATS,
            **{int(f.get("numFmtId", -1)): f.get("formatCode") for f in root.iter(MAIN + "numFmt")},
        }
        xfs = next(root.iter(MAIN + "cellXfs"), None)
        self.formats = [codes.get(int(x.get("numFmtId", 0)), "?") for x in (xfs if xfs is not None else [])]
        mine = {**BUILTIN_FORMATS, **NUMBER_FORMATS}
        self.expected = [mine.get(n, "?") for _, _, n in STYLE_LIST.values()]

    def describe(self, style, formats):
        index = int(style or 0)
        code = formats[index] if 0 <= index < len(formats) else None
        return f"style {index}" + (f' (number format "{code}")' if code else " (not in the styles part)")


# --- the sheets, row by row ---------------------------------------------------------------------------


class _PartReader:
    """A sheet part, streamed: its head (to <sheetData>), its rows as (number, bytes), then its tail."""

    def __init__(self, stream, where):
        self.stream, self.where, self.buf, self.pos, self.eof = stream, where, b"", 0, False

    def _more(self):
        chunk = self.stream.read(1 << 22)
        if not chunk:
            self.eof = True
            return False
        if len(self.buf) - self.pos > MAX_ROW_BYTES:
            raise NotCompiled(f"{self.where}: a row of more than {MAX_ROW_BYTES:,} bytes, not one xlgpt writes")
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def head(self):
        while (end := self.buf.find(b"<sheetData>")) < 0:
            if not self._more():
                raise XlgptError(f"{self.where}: malformed XML (no <sheetData>)")
        self.pos = end + len(b"<sheetData>")
        return self.buf[: self.pos]

    def rows(self):
        while True:
            if len(self.buf) - self.pos < 16 and not self.eof:
                self._more()
                continue
            if self.buf.startswith(b"<row ", self.pos):
                end = self.buf.find(b">", self.pos)
                if end < 0:
                    if not self._more():
                        break
                    continue
                if self.buf[end - 1 : end] == b"/":
                    stop = end + 1
                else:
                    close = self.buf.find(b"</row>", end)
                    if close < 0:
                        if not self._more():
                            break
                        continue
                    stop = close + len(b"</row>")
                m = _ROW_NUMBER.match(self.buf, self.pos)
                if not m:
                    break
                yield int(m.group(1)), self.buf[self.pos : stop]
                self.pos = stop
            elif self.buf.startswith(b"</sheetData>", self.pos):
                return
            else:
                break
        if self.eof:
            raise XlgptError(f"{self.where}: malformed XML (the part ends inside its rows)")
        raise NotCompiled(f"{self.where}: {self.buf[self.pos : self.pos + 40]!r}... is not a row as xlgpt writes rows")

    def tail(self):
        while self._more():
            pass
        return self.buf[self.pos :]


_ROW_NUMBER = re.compile(rb'<row r="(\d+)"')
_ROW = re.compile(r'<row r="(\d+)"((?: [A-Za-z]+="[^"]*")*)(/?)>')
_ATTR = re.compile(r' ([A-Za-z]+)="([^"]*)"')
_RANGE = r"[A-Z]{1,3}\d+(?::[A-Z]{1,3}\d+)?"
_CELL = re.compile(
    r'<c r="([A-Z]{1,3})(\d+)"(?: s="(\d+)")?(?: t="([A-Za-z]+)")?'
    r'(?:/>|>(<f( t="array" ref="{0}"| t="shared" ref="{0}" si="\d+"| t="shared" si="\d+")?(?:>([^<]*)</f>|/>))?'
    r'(<v>([^<]*)</v>)?(<is><t xml:space="preserve">([^<]*)</t></is>)?</c>)'.replace("{0}", _RANGE)
)
_COLUMN = {column_letter(c): c for c in range(1, 16385)}
_LETTERS = [None] + [column_letter(c).encode() for c in range(1, 16385)]
# a cached result in a cell an array formula fills, as the writer writes it (no style, an explicit type)
_CACHED_CELL = re.compile(rb'<c r="([A-Z]{1,3})\d+" t="(?:n|str|e|b)"><v>[^<]*</v></c>')
# a formula cell's cached result: its type attribute and <v>
_FORMULA_CACHE = re.compile(
    rb'( t="(?:n|str|e|b)")(><f(?: t="array" ref="[A-Z0-9:]+")?>[^<]*</f>|><f t="shared"(?: ref="[A-Z0-9:]+")? si="\d+"'
    rb"(?:/>|>[^<]*</f>))<v>[^<]*</v>"
)


def _uncached(row, filled):
    """A row's bytes without the results its formulas cached, or None when a cell that looks like a cached
    result lies outside the cells array formulas fill (`filled`: their column letters)."""
    if not all(letters in filled for letters in _CACHED_CELL.findall(row)):
        return None
    return _FORMULA_CACHE.sub(rb"\2", _CACHED_CELL.sub(b"", row))


_CACHED_TYPES = ("", "n", "str", "e", "b")


@dataclass
class _Cell:
    s: str  # the style attribute (None: none)
    t: str  # the type attribute
    array: str  # ' t="array" ref="..."' of an array formula's anchor, ' t="shared" ...' of a shared formula's
    # cell, "" of a one-cell formula, None: no formula
    formula: str  # the formula's text as written (XML-escaped)
    v: str  # the <v> text as written
    inline: str  # an inline string's text as written

    @property
    def is_formula(self):
        return self.array is not None

    @classmethod
    def of(cls, g):
        """From a match of _CELL (its groups, as findall gives them: "" for a group that did not take part)."""
        if g is None:
            return None
        return cls(
            g[2] or None,
            g[3] or None,
            g[5] if g[4] else None,
            g[6] if g[4] else None,
            g[8] if g[7] else None,
            g[10] if g[9] else None,
        )


def _parse_row(data, where):
    """(row number, {attribute: value} of the row, {column: groups of _CELL}) of a row's XML as the writer
    writes it (anything else in a row is refused)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    m = _ROW.match(text)
    if not m:
        raise NotCompiled(f"{where}: a row not as xlgpt writes rows ({text[:60]!r}...)")
    number, attrs = int(m.group(1)), dict(_ATTR.findall(m.group(2)))
    cells = {}
    if not m.group(3):
        content = text[m.end() : -len("</row>")]
        found = _CELL.findall(content)
        rest = _CELL.sub("", content)
        if rest or not text.endswith("</row>"):
            raise NotCompiled(
                f"{where}: holds {rest[:60]!r}..., not a cell as xlgpt writes cells (shared and data-table "
                f"formulas, rich text, metadata: none is xlgpt's)"
            )
        last, row = 0, str(number)
        for g in found:
            col = _COLUMN[g[0]] if g[0] in _COLUMN else MAX_COLUMN
            if g[1] != row or col <= last or col >= MAX_COLUMN:
                raise NotCompiled(f"{where}: a cell out of order, repeated or outside the sheet ({g[0]}{g[1]})")
            last = col
            cells[col] = g
    return number, attrs, cells


MAX_COLUMN = 16385


def _constant(cell, strings):
    """(kind, value) a constant cell shows: ("n", float), ("s", text), ("b", bool), ("e", error) or (None, None)."""
    if cell is None:
        return None, None
    t = cell.t or "n"
    if t == "s":
        if cell.v is None or not cell.v.isdigit() or int(cell.v) >= len(strings):
            return "bad", f"shared string {cell.v!r}, which the book does not have"
        return "s", strings[int(cell.v)][0]
    if t == "inlineStr":
        return ("s", unescape(cell.inline)) if cell.inline is not None else (None, None)
    if cell.v is None:
        return None, None
    if t == "n":
        try:
            return "n", float(cell.v)
        except ValueError:
            return "bad", f"{cell.v!r}, which is not a number"
    if t == "str":
        return "s", unescape(cell.v)
    if t == "e":
        return "e", cell.v
    if t == "b":
        return "b", cell.v in _TRUE
    return "bad", f"a value of type {t!r}"


def _cached(cell):
    """The cached result a formula cell (or a cell an array formula fills) shows."""
    if cell is None or cell.v is None:
        return None
    if cell.t in (None, "n"):
        try:
            return float(cell.v)
        except ValueError:
            return CachedError(cell.v)
    if cell.t == "str":
        return unescape(cell.v)
    if cell.t == "b":
        return float(cell.v in _TRUE)
    return CachedError(cell.v)


def _show(kind, value):
    if kind is None:
        return "nothing"
    if kind == "n":
        return f"{value:.9g}"
    if kind == "s":
        return repr(value)
    return str(value)


class _SheetCheck:
    """One tab: the file's rows against the writer's for the recompiled tab."""

    def __init__(self, book, sheet, strings, styles, display, wanted, cached):
        self.book, self.sheet, self.strings, self.styles, self.display = book, sheet, strings, styles, display
        self.label = quote_sheet(sheet.name)
        self.inputs, self.arrays = set(), []
        for b in sheet.blocks:
            if isinstance(b, ArrayFormula):
                r = b.region
                self.arrays.append((r.top, r.bottom, r.left, r.right))
            elif isinstance(b, Cells) and b.style == INPUT:
                self.inputs.update((b.top + i, b.left + j) for i, row in enumerate(b.rows) for j in range(len(row)))
        self.arrays.sort()
        prompt = book.names.get(C.PROMPT)
        self.prompt = (prompt.top, prompt.left) if prompt is not None and prompt.sheet == sheet.name else None
        self.wanted = sorted(wanted.items(), key=lambda kv: kv[1].top)
        self.cached = cached
        self.smap = {}
        for i, (text, _) in enumerate(strings):
            self.smap.setdefault(text, i)
        self.active, self.next_array, self.active_wanted, self.next_wanted = [], 0, [], 0
        self.filled = {}  # the column letters of the cells array formulas fill in a row, by the regions over it

    def run(self, reader):
        head = reader.head()
        if head != _sheet_head(self.sheet).encode():
            text = head.decode("utf-8", "replace")
            if re.search(r"transition(Evaluation|Entry)", text):
                raise NotCompiled(
                    f"{self.label}: the tab evaluates formulas by Lotus 1-2-3's rules (transitionEvaluation)"
                )
            self.display(f"{self.label}: the tab's columns, panes or colour are not the compiler's")
        expected = self._expected()
        want = next(expected, None)
        last = 0
        for number, data in reader.rows():
            if number <= last:
                raise NotCompiled(f"{self.label}: row {number} out of order or repeated")
            last = number
            while want is not None and want[0] < number:
                self.row(want[0], None, want[1])
                want = next(expected, None)
            if want is not None and want[0] == number:
                if (data != want[1] or self.keeps(number)) and not self.same_but_cached(number, data, want[1]):
                    self.row(number, data, want[1])  # a difference, or cached values to keep
                want = next(expected, None)
            else:
                self.row(number, data, None)
        while want is not None:
            self.row(want[0], None, want[1])
            want = next(expected, None)
        self.tail(reader.tail(), reader.where)

    def _expected(self):
        """(row number, bytes) of each row the writer writes for this tab, with the file's shared strings."""
        sheet = self.sheet
        chunks = ("".join(sheet.rows_xml(start, stop, self.smap)).encode() for start, stop in sheet.chunks())
        for chunk in chunks:
            pos = 0
            while pos < len(chunk):
                end = chunk.find(b">", pos)
                stop = end + 1 if chunk[end - 1 : end] == b"/" else chunk.find(b"</row>", end) + len(b"</row>")
                yield int(_ROW_NUMBER.match(chunk, pos).group(1)), chunk[pos:stop]
                pos = stop

    def _advance(self, number):
        """The array formulas' regions and the wanted names' rects that cover row `number` (rows come in order)."""
        while self.next_array < len(self.arrays) and self.arrays[self.next_array][0] <= number:
            self.active.append(self.arrays[self.next_array])
            self.next_array += 1
        self.active = [a for a in self.active if a[1] >= number]
        while self.next_wanted < len(self.wanted) and self.wanted[self.next_wanted][1].top <= number:
            self.active_wanted.append(self.wanted[self.next_wanted])
            self.next_wanted += 1
        self.active_wanted = [w for w in self.active_wanted if w[1].bottom >= number]

    def keeps(self, number):
        """Does row `number` hold cells whose cached values are wanted (constants there too: they show as well)?"""
        self._advance(number)
        return bool(self.active_wanted)

    def same_but_cached(self, number, got, want):
        """Do two rows differ only in the results formulas cached (the cells array formulas fill, the values of
        formula cells), in a row holding none of the cells whose cached values are wanted? A byte comparison of
        the rows without them: the common case of a computation tab, at C speed."""
        self._advance(number)
        if self.active_wanted:
            return False
        key = tuple((top == number, left, right) for top, _, left, right in self.active)
        filled = self.filled.get(key)
        if filled is None:
            filled = self.filled[key] = {
                _LETTERS[c] for anchor, left, right in key for c in range(left + anchor, right + 1)
            }
        return _uncached(got, filled) == _uncached(want, filled) is not None

    def row(self, number, got, want):
        where = f"{self.label} row {number}"
        _, gattrs, gcells = _parse_row(got, where) if got is not None else (number, {}, {})
        _, wattrs, wcells = _parse_row(want, where) if want is not None else (number, {}, {})
        if gattrs != wattrs:
            self.display(f"{where}: its format ({_attrs(gattrs)}) is not the compiler's ({_attrs(wattrs)})")
        self._advance(number)
        filled = set()  # the columns of this row's cells that array formulas fill, besides their anchors
        for top, _, left, right in self.active:
            filled.update(range(left + (top == number), right + 1))
        keep = self.active_wanted
        for col in sorted(gcells.keys() | wcells.keys()):
            g = gcells.get(col)
            if keep and g is not None:
                for name, rect in keep:
                    if rect.left <= col <= rect.right:
                        self.cached[name][number - rect.top, col - rect.left] = _cached(_Cell.of(g))
            if col in filled and (g is None or not (g[2] or g[4] or g[9] or g[3] not in _CACHED_TYPES)):
                continue  # a cached result, unstyled as the writer writes it: whatever the compiler cached there
            self.cell(number, col, _Cell.of(g), _Cell.of(wcells.get(col)), col in filled)

    def cell(self, number, col, got, want, filled=False):
        ref = f"{self.label}!{cell_name(number, col)}"
        at_prompt = (number, col) == self.prompt
        if want is not None and want.is_formula and not at_prompt:
            if got is None or not got.is_formula:
                raise NotCompiled(f"{ref}: holds a constant where the compiler writes a formula")
            if (got.array, got.formula) != (want.array, want.formula):
                raise NotCompiled(f"{ref}: the formula is not the compiler's")
            self.style(ref, got, want)
            return
        if got is not None and got.is_formula and not at_prompt:
            if (number, col) in self.inputs:
                raise NotCompiled(f"{ref}: an input cell holds a formula")
            raise NotCompiled(f"{ref}: holds a formula where the compiler writes none")
        if filled:  # a cached result of an array formula (whatever the compiler cached there)
            if got is not None and (got.inline is not None or got.t not in (None, "n", "str", "e", "b")):
                raise NotCompiled(f"{ref}: holds a constant inside an array formula's range")
            self.style(ref, got, want)  # the writer gives it no style (it takes the row's)
            return
        if (number, col) in self.inputs or at_prompt:  # any constant a person typed
            self.style(ref, got, want)
            return
        gk, gv = _constant(got, self.strings)
        wk, wv = _constant(want, self.strings)
        if gk == "bad":
            raise NotCompiled(f"{ref}: holds {gv}")
        if (gk, gv) != (wk, wv) and not (
            wk == "s" and gk == "s" and wv.startswith(STEERING_NOTE) and gv.startswith(STEERING_NOTE)
        ):
            whose = "xlgpt writes"
            if self.sheet.group == "weights" and wk == "n":
                whose = "the checkpoint's value, as xlgpt writes it, is"
            elif self.sheet.group in ("weights", "tables") and wk == "s":
                whose = "the tokenizer's is"
            raise NotCompiled(f"{ref}: holds {_show(gk, gv)} where {whose} {_show(wk, wv)}")
        if gk == "s" and got.t == "s" and self.strings[int(got.v)][1]:
            self.display(f"{ref}: its text is formatted (rich text), which xlgpt does not write")
        self.style(ref, got, want)

    def style(self, ref, got, want):
        g, w = got.s if got is not None else None, want.s if want is not None else None
        if g != w:
            self.display(
                f"{ref}: {self.styles.describe(g, self.styles.formats) if g is not None else 'no style'} where "
                f"xlgpt writes {self.styles.describe(w, self.styles.expected) if w is not None else 'none'}"
            )

    def tail(self, got, where):
        want = sheet_tail(self.sheet).encode()
        if got == want:
            return
        wrap = lambda xml: ET.fromstring(f'<worksheet xmlns="{MAIN[1:-1]}" xmlns:r="{REL_NS[1:-1]}">'.encode() + xml)
        if not got.startswith(b"</sheetData>"):
            raise NotCompiled(f"{self.label}: the sheet does not end as xlgpt writes it")
        try:
            g, w = wrap(got[len(b"</sheetData>") :]), wrap(want[len(b"</sheetData>") :])
        except ET.ParseError as e:
            raise XlgptError(f"{where}: malformed XML after the cells ({e})")
        for el in g:
            if _local(el.tag) not in TAIL_ELEMENTS:
                raise NotCompiled(f"{self.label}: holds <{_local(el.tag)}>, which xlgpt does not write")
        formulas = lambda root: Counter(
            (el.text or "") for el in root.iter() if _local(el.tag) == "f" or _local(el.tag).startswith("formula")
        )
        if formulas(g) - formulas(w):
            raise NotCompiled(f"{self.label}: a conditional format or validation formula is not the compiler's")
        rules = lambda root: [ET.tostring(el) for el in root if _local(el.tag) == "conditionalFormatting"]
        mine, theirs = rules(g), rules(w)
        if mine != theirs:
            missing = sum((Counter(theirs) - Counter(mine)).values())
            self.display(
                f"{self.label}: its conditional formats (heatmaps, greyed padding) are not the compiler's "
                f"({len(mine)} where xlgpt writes {len(theirs)}, {missing} of them missing or changed)"
            )
        else:
            self.display(f"{self.label}: its links or charts are not the compiler's")


def _attrs(attrs):
    return ", ".join(f"{k}={v!r}" for k, v in sorted(attrs.items())) or "none"
