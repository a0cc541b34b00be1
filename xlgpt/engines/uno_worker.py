"""Drive a running LibreOffice through its Python-UNO bridge, for xlgpt.engines.session.

Run by the SYSTEM Python (the one that can `import uno`, e.g. /usr/bin/python3 with Debian's python3-uno),
never imported by xlgpt: it uses only the standard library and uno. It starts nothing; the client starts
soffice with --accept=<ACCEPT> and then this script:

    /usr/bin/python3 uno_worker.py '<connection, e.g. pipe,name=xlgpt-1234;urp>' [PGID]

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout, in order.
    {"op": "connect", "timeout": 60}                 -> {"ok": true, "result": {"seconds": ...}}
    {"op": "open", "path": "/abs/book.xlsx", "editable": false, "recalc": true}
        -> {"ok": true, "result": {"doc": 1, "sheets": [...]}}
    {"op": "set", "doc": 1, "name": "TokenIds", "index": 3, "value": 42}
    {"op": "set", "doc": 1, "sheet": "Tokens", "row": 1, "col": 1, "value": "text"}   (0-based row/col)
    {"op": "calculate", "doc": 1, "all": false}       -> {"ok": true, "result": {"seconds": ...}}
    {"op": "read", "doc": 1, "names": ["Logits"], "ranges": ["Tokens.A1:B2"]}
        -> {"ok": true, "result": {"Logits": {"values": [[...], ...], "errors": [[r, c, code], ...]}}}
        values: numbers as floats, text as strings, empty cells as "", error cells as null (their
        LibreOffice error code in "errors", relative row and column)
    {"op": "put", "doc": 1, "name": "Targets", "values": [[1, 2, 3]]}   (a whole named range's numbers;
        put and copy need a document opened editable)
    {"op": "copy", "doc": 1, "pairs": [["New_wte_weight", "wte_weight"], ...]}
        -> the values of each first name written over the second (same shape): a training step's update
    {"op": "batch", "doc": 1, "requests": [{"op": "set", ...}, {"op": "read", ...}]}
        -> {"ok": true, "result": [each request's result, in order]}: one round trip for a generation step
    {"op": "autocalc", "doc": 1}   -> automatic calculation on (a manual book's too): a read computes what it reads
    {"op": "close", "doc": 1}
Any failure: {"ok": false, "error": "one line"}. On end of input the worker exits; given PGID (the
client's soffice process group) it also kills that group, so a client that dies leaves nothing running.
"""

import json
import os
import signal
import sys
import time
import traceback

import uno
from com.sun.star.beans import PropertyValue

ERROR_RESULT = 4  # com.sun.star.sheet.FormulaResult.ERROR


def prop(name, value):
    p = PropertyValue()
    p.Name, p.Value = name, value
    return p


class Worker:
    def __init__(self, connection):
        self.connection = connection
        self.desktop = None
        self.docs = {}
        self.next_doc = 1

    def connect(self, timeout=60):
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
        t0 = time.monotonic()
        while True:
            try:
                ctx = resolver.resolve(f"uno:{self.connection};StarOffice.ComponentContext")
                break
            except Exception as e:  # NoConnectException until soffice listens
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"no LibreOffice listening on {self.connection} after {timeout} s ({e})")
                time.sleep(0.1)
        self.ctx = ctx
        self.desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
        # no .~lock.NAME# beside an editable book: soffice is killed at the end, and would leave it there
        self._configure(ctx, "/org.openoffice.Office.Common/Misc", UseLocking=False)
        return {"seconds": round(time.monotonic() - t0, 3)}

    @staticmethod
    def _configure(ctx, node, **settings):
        """Set this session's private profile's settings under `node`."""
        provider = ctx.ServiceManager.createInstanceWithContext("com.sun.star.configuration.ConfigurationProvider", ctx)
        access = provider.createInstanceWithArguments(
            "com.sun.star.configuration.ConfigurationUpdateAccess", (prop("nodepath", node),)
        )
        for key, value in settings.items():
            access.setPropertyValue(key, value)
        access.commitChanges()

    def open(self, path, editable=False, recalc=True):
        # recalc: compute every formula on load (0 = always), whatever results the file caches. Without it (1 =
        # never) LibreOffice keeps a plain formula's cached result, and does not recompute that cell when an array
        # formula it reads changes: only for a book that caches no results, whose cells are computed when read
        mode = 0 if recalc else 1
        self._configure(self.ctx, "/org.openoffice.Office.Calc/Formula/Load", OOXMLRecalcMode=mode, ODFRecalcMode=mode)
        # never saved. Read-only, cell edits through the API still work, and no lock file is read or made; range
        # writes (setDataArray) need an editable document (the session's profile makes no lock file for it)
        props = (
            prop("Hidden", True),
            prop("ReadOnly", not editable),
            prop("MacroExecutionMode", 0),  # NEVER_EXECUTE
            prop("UpdateDocMode", 0),
        )  # NO_UPDATE of links
        doc = self.desktop.loadComponentFromURL(uno.systemPathToFileUrl(os.path.abspath(path)), "_blank", 0, props)
        if doc is None:
            raise RuntimeError(f"{path}: LibreOffice could not open it")
        if not doc.supportsService("com.sun.star.sheet.SpreadsheetDocument"):
            doc.close(True)
            raise RuntimeError(f"{path}: LibreOffice did not open it as a spreadsheet")
        handle = self.next_doc
        self.next_doc += 1
        self.docs[handle] = doc
        return {"doc": handle, "sheets": list(doc.getSheets().getElementNames())}

    def _doc(self, handle):
        if handle not in self.docs:
            raise RuntimeError(f"no open document {handle}")
        return self.docs[handle]

    def _range(self, doc, name=None, ref=None):
        if name is not None:
            names = doc.NamedRanges
            if not names.hasByName(name):
                raise RuntimeError(f"the workbook has no defined name {name}")
            return names.getByName(name).getReferredCells()
        sheet, _, cells = ref.rpartition(".")  # "Sheet name.A1:B2"
        sheets = doc.getSheets()
        if not sheets.hasByName(sheet):
            raise RuntimeError(f"the workbook has no sheet {sheet!r}")
        return sheets.getByName(sheet).getCellRangeByName(cells)

    def _cell(self, doc, msg):
        if "name" in msg:
            rng = self._range(doc, name=msg["name"])
            addr = rng.getRangeAddress()
            rows, cols = addr.EndRow - addr.StartRow + 1, addr.EndColumn - addr.StartColumn + 1
            index = msg.get("index")
            if index is None:
                r, c = 0, 0
            elif isinstance(index, list):
                r, c = index
            elif rows == 1:
                r, c = 0, index
            elif cols == 1:
                r, c = index, 0
            else:
                raise RuntimeError(f"{msg['name']} is {rows}x{cols}: give the index as [row, col]")
            if not (0 <= r < rows and 0 <= c < cols):
                raise RuntimeError(f"index {index} is outside {msg['name']} ({rows}x{cols})")
            return rng.getCellByPosition(c, r)
        sheets = doc.getSheets()
        if not sheets.hasByName(msg["sheet"]):
            raise RuntimeError(f"the workbook has no sheet {msg['sheet']!r}")
        return sheets.getByName(msg["sheet"]).getCellByPosition(msg["col"], msg["row"])

    def set(self, doc, value, **where):
        cell = self._cell(self._doc(doc), where)
        if isinstance(value, bool) or value is None:
            raise RuntimeError(f"cannot set a cell to {value!r}")
        if isinstance(value, (int, float)):
            cell.setValue(float(value))
        elif isinstance(value, dict) and "formula" in value:
            cell.setFormula(value["formula"])
        else:
            cell.setString(str(value))  # text as typed: never parsed as a number or formula
        return {}

    def calculate(self, doc, all=False):
        d = self._doc(doc)
        t0 = time.monotonic()
        d.calculateAll() if all else d.calculate()
        return {"seconds": round(time.monotonic() - t0, 4)}

    def read(self, doc, names=(), ranges=()):
        d = self._doc(doc)
        out = {}
        for key, rng in [(n, self._range(d, name=n)) for n in names] + [(r, self._range(d, ref=r)) for r in ranges]:
            values = [list(row) for row in rng.getDataArray()]
            errors = []
            addr = rng.getRangeAddress()
            bad = rng.queryFormulaCells(ERROR_RESULT)  # cheap: usually empty
            for a in bad.getRangeAddresses():
                for r in range(a.StartRow, a.EndRow + 1):
                    for c in range(a.StartColumn, a.EndColumn + 1):
                        i, j = r - addr.StartRow, c - addr.StartColumn
                        code = rng.getCellByPosition(j, i).getError()
                        values[i][j] = None
                        errors.append([i, j, code])
            out[key] = {"values": values, "errors": errors}
        return out

    def put(self, doc, name, values):
        self._range(self._doc(doc), name=name).setDataArray(tuple(tuple(float(v) for v in row) for row in values))
        return {}

    def copy(self, doc, pairs):
        d = self._doc(doc)
        # read every source before writing any target: a target's change would make the later sources stale
        values = [self._range(d, name=source).getDataArray() for source, _ in pairs]
        for (_, target), rows in zip(pairs, values):
            self._range(d, name=target).setDataArray(rows)
        return {}

    def autocalc(self, doc):
        t0 = time.monotonic()
        self._doc(doc).enableAutomaticCalculation(True)
        return {"seconds": round(time.monotonic() - t0, 4)}

    def batch(self, doc, requests):
        out = []
        for r in requests:
            r = dict(r)
            op = r.pop("op")
            if op not in ("set", "calculate", "read"):
                raise RuntimeError(f"op {op!r} cannot go in a batch")
            out.append(getattr(self, op)(doc=doc, **r))
        return out

    def close(self, doc):
        d = self.docs.pop(doc, None)
        if d is not None:
            try:
                d.close(True)
            except Exception:
                d.dispose()
        return {}


def main():
    connection = sys.argv[1]
    group = int(sys.argv[2]) if len(sys.argv) > 2 else None
    # the protocol owns the real stdout; anything else printed (by uno or LibreOffice) goes to stderr
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    worker = Worker(connection)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
                op = msg.pop("op")
                if op not in (
                    "connect",
                    "open",
                    "set",
                    "put",
                    "copy",
                    "calculate",
                    "read",
                    "batch",
                    "autocalc",
                    "close",
                ):
                    raise RuntimeError(f"unknown op {op!r}")
                reply = {"ok": True, "result": getattr(worker, op)(**msg)}
            except Exception as e:  # reported to the client, which decides what to do
                text = " ".join(str(e).split()) or type(e).__name__
                reply = {"ok": False, "error": f"{type(e).__name__}: {text}", "trace": traceback.format_exc(limit=3)}
            out.write(json.dumps(reply) + "\n")
    finally:
        if group:
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
