"""Prove a book computes its results: its formulas are the ones the compiler writes.

eval recompiles the book in memory (template + checkpoint + the inputs the book records; nothing is written)
and compares, before any engine opens the file:
- the package's parts: exactly the ones the writer makes (no external links, macros, connections...);
- the tabs, in order, and every defined name with its target;
- every formula cell, cell by cell: a cell where the compiler writes a formula must hold that formula (a
  constant there, such as a forged logit, is refused), and a cell holding a formula must be one where the
  compiler writes that same formula. Input cells (yellow: token ids, Prompt, switches, steering, sampling)
  may hold any constant a person typed; the Prompt cell may also hold the formula xlgpt writes for text
  (checked when the book is read).

The file's sheets are read with a streaming XML parser, one cell at a time, so books of any size compare in
bounded memory; the compiled side is walked block by block, without formatting the weights.
"""

import re
import xml.etree.ElementTree as ET
import zipfile

from xlgpt.compile.backward import Training
from xlgpt.compile.build import compile_book, inputs_for
from xlgpt.model.sae import sae_as_written
from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C
from xlgpt.sheet.cells import ArrayFormula, Cells, Formula, cell_name, quote_sheet
from xlgpt.sheet.read import read_member
from xlgpt.sheet.styles import INPUT
from xlgpt.sheet.writer import NS, chart_parts, sheet_tail
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
_REF = re.compile(r"([A-Z]{1,3})(\d+)")


class NotCompiled(XlgptError):
    """The book's formulas are not the compiler's: eval's verdict is a mismatch (exit 1), not bad input."""


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


def recompile(book, ckpt, tok, template=None):
    """(sheets, names, stages) the compiler writes for what `book` records: its checkpoint, its kind of input
    and its sizes. The input cells' values do not matter (they may differ). stages: each stage of the spec
    with its output's cells, in dataflow order (compile.lower)."""

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
        inputs = inputs_for(ckpt, list(book.tokens))
    training = book.training and Training(
        book.training["targets"], book.training["optimizer"], history=[0.0] * len(book.training["history"])
    )
    sae = book.about.sae and sae_as_written(book.about.sae, ckpt.config)
    compiled, names = compile_book(ckpt, inputs, book.about, tok, template, sae=sae, training=training)
    return compiled.sheets(), names, compiled.stages


def _expected_cells(sheet):
    """(row, col, formula or None, array ref or None, input?) of every cell the compiler writes a formula
    into, and of every input cell, in row-major order."""
    out = []
    for b in sheet.blocks:
        if isinstance(b, ArrayFormula):
            out.append((b.top, b.left, str(b.formula), b.region.ref(b.region.sheet, absolute=False), False))
        elif isinstance(b, Cells):
            for i, row in enumerate(b.rows):
                for j, v in enumerate(row):
                    if isinstance(v, Formula) or (b.style == INPUT and v is not None):
                        out.append(
                            (b.top + i, b.left + j, str(v) if isinstance(v, Formula) else None, None, b.style == INPUT)
                        )
    out.sort(key=lambda c: (c[0], c[1]))
    return out


def _other_formulas(xml_elements):
    """Formulas outside cells (conditional formats, data validation: <formula>, <formula1>, ...), in order."""
    return [
        (el.tag.rsplit("}", 1)[-1], el.text or "")
        for el in xml_elements
        if el.tag.rsplit("}", 1)[-1].startswith("formula")
    ]


def _tail_formulas(sheet):
    """The formulas the writer puts after a sheet's cells (conditional formats), from its own XML."""

    root = ET.fromstring(f"<worksheet {NS}><sheetData>" + sheet_tail(sheet))
    return _other_formulas(root.iter())


def _file_formulas(stream, where, others=None):
    """(row, col, formula, array ref) of every formula cell of a sheet part, streamed; cells must come in
    order (a repeated or out-of-order cell could hide another). Formulas outside cells go to `others`."""
    last = (0, 0)
    try:
        for _, el in ET.iterparse(stream, events=("end",)):
            if others is not None and el.tag.rsplit("}", 1)[-1].startswith("formula"):
                others.append((el.tag.rsplit("}", 1)[-1], el.text or ""))
            if el.tag == MAIN + "c":
                rc = _rc(el.get("r"))
                if rc is None or rc <= last:
                    raise NotCompiled(f"{where}: a cell without an address or out of order ({el.get('r')!r})")
                last = rc
                f = el.find(MAIN + "f")
                if f is not None:
                    ref = f.get("ref") if f.get("t") == "array" else None
                    extra = {k: v for k, v in f.attrib.items() if k not in ("t", "ref")}
                    if extra or f.get("t") not in (None, "array"):
                        yield rc[0], rc[1], None, "shared or data-table formula"
                    else:
                        yield rc[0], rc[1], f.text or "", ref
                el.clear()
            elif el.tag == MAIN + "row":
                el.clear()
    except ET.ParseError as e:
        raise XlgptError(f"{where}: malformed XML ({e})")


def _has_formula(stream):
    """Whether a sheet part holds any formula (an <f> element; '<' never appears unescaped in text), by a
    byte scan at disk speed instead of a parse."""
    tail = b""
    for chunk in iter(lambda: stream.read(1 << 22), b""):
        if b"<f" in tail + chunk[:1] or b"<f" in chunk:
            return True
        tail = chunk[-1:]
    return False


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


def check_compiled(book, sheets, names):
    """Raise NotCompiled naming the first thing in `book`'s file that the compiler's `sheets` and `names`
    do not have."""
    path = book.path
    with zipfile.ZipFile(path) as zf:
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
        for sheet in sheets:
            part = parts[sheet.name]
            if part not in members:
                raise XlgptError(f"{path.name}: the tab {sheet.name!r} has no part {part}")
            cells = _expected_cells(sheet)
            if not cells:  # a tab of constants (the weights: the bulk of a book): it must hold no formula at all
                with zf.open(part) as stream:
                    if _has_formula(stream):
                        raise NotCompiled(f"{quote_sheet(sheet.name)}: holds a formula where the compiler writes none")
                continue
            expected = iter(cells)
            want = next(expected, None)
            label = quote_sheet(sheet.name)

            def differs(row, col, why):
                return NotCompiled(f"{label}!{cell_name(row, col)}: {why}")

            others = []
            with zf.open(part) as stream:
                for row, col, formula, ref in _file_formulas(stream, f"{path.name}: {part}", others):
                    while want is not None and (want[0], want[1]) < (row, col):
                        if want[2] is not None and not want[4]:  # a computed cell the file holds no formula in
                            raise differs(want[0], want[1], "holds a constant where the compiler writes a formula")
                        want = next(expected, None)
                    if want is None or (want[0], want[1]) != (row, col):
                        raise differs(row, col, "holds a formula where the compiler writes none")
                    if want[2] is None:  # an input cell the compiler fills with a constant
                        if not (
                            sheet.name == book.names.get(C.PROMPT, _NoRect).sheet
                            and (row, col) == (book.names[C.PROMPT].top, book.names[C.PROMPT].left)
                        ):
                            raise differs(row, col, "an input cell holds a formula")
                    elif (formula, ref) != (want[2], want[3]):
                        raise differs(row, col, "the formula is not the compiler's")
                    want = next(expected, None)
            while want is not None:
                if want[2] is not None and not want[4]:
                    raise differs(want[0], want[1], "holds a constant where the compiler writes a formula")
                want = next(expected, None)
            if others != _tail_formulas(sheet):
                raise NotCompiled(f"{label}: a conditional format or validation formula is not the compiler's")


class _NoRect:
    sheet = None
