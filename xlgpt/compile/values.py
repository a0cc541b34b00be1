"""The cached value of every formula cell the compiler writes, computed from that very formula (evaluate.py) on
the values of the cells it reads: an op states its math once, as its formula, and a book opens showing what its
formulas compute. The constants (weights as a spreadsheet reads them, the inputs, the labels) are recorded as
they are written (layout.Book.constants), so every value follows from them.

The NumPy reference stays the independent check: eval compares the engines' results with it, never with these.
"""

import re

import numpy as np

from xlgpt.compile.evaluate import Unsupported, parse
from xlgpt.sheet.cells import DIV0, CellError
from xlgpt.sheet.layout import Rect
from xlgpt.sheet.read import parse_ref

# A cell or range in rendered formula text: 'Sheet name'!$A$1:$B$2, Sheet!A1, or $A$1 on the formula's own tab
_SHEET = r"(?:'(?:[^']|'')+'|[A-Za-z_][\w.]*)!"
_CELL = r"\$?[A-Z]{1,3}\$?\d+"
_REFERENCE = re.compile(rf"(?<![\w.$'])((?:{_SHEET})?{_CELL}(?::{_CELL})?)(?![\w(!])")
_STRING = re.compile(r'"(?:[^"]|"")*"')
SHARED_OPERAND_CELLS = 4096  # see batch_key


class FormulaValues:
    """Installed on a Book (book.formula_values): its tabs hand it each formula they write."""

    def __init__(self, book, named):
        self.book, self.named = book, named
        self.working = None  # (Rect, array) of an `each` block being filled cell by cell
        self.pending = []  # formulas that read a cell or name not written yet: evaluated again by finish()

    # --- the four ways a tab writes formulas -------------------------------------------------------------
    def array(self, rect, template, refs):
        """One array formula filling `rect`."""
        result = self.evaluate(template, [refs], rect.sheet)
        if result is None:
            return self.pending.append((self.array, rect, template, refs))
        self.book.cache(rect, cells(result[0], rect))

    def columns(self, rect, template, refs_per_column):
        """An array formula in each column of `rect` (the positions' KV-cache layout), evaluated as one batch."""
        result = self.evaluate(template, refs_per_column, rect.sheet)
        if result is None:
            return self.pending.append((self.columns, rect, template, refs_per_column))
        self.book.cache(rect, cells(np.concatenate(list(result), axis=1), rect))

    def each(self, rect, template, refs_at):
        """A formula in each cell of `rect`, refs_at(i, j) giving its operands. Cells whose operands lie outside
        the block are evaluated together, a batch per shape of operands; a block that reads its own cells (a
        running sum) is filled in order."""
        # the operands now: refs_at may close over a loop's variable, and an evaluation may wait (pending)
        self.cells_of(rect, template, [((i, j), refs_at(i, j)) for i in range(rect.height) for j in range(rect.width)])

    def cells_of(self, rect, template, items):
        """each's work: `items` are ((i, j), operands) of every cell."""
        out = np.full((rect.height, rect.width), None, object)
        if any(isinstance(r, Rect) and overlaps(r, rect) for _, refs in items for r in refs.values()):
            self.working = (rect, out)
            try:
                for (i, j), refs in items:
                    result = self.evaluate(template, [refs], rect.sheet)
                    if result is None:
                        return self.pending.append((self.cells_of, rect, template, items))
                    out[i, j] = cells(result[0], rect.cell(i, j))[0, 0]
            finally:
                self.working = None
        else:
            groups = {}
            for (i, j), refs in items:
                groups.setdefault(batch_key(refs), []).append(((i, j), refs))
            for group in groups.values():
                result = self.evaluate(template, [refs for _, refs in group], rect.sheet)
                if result is None:
                    return self.pending.append((self.cells_of, rect, template, items))
                for ((i, j), _), value in zip(group, result):
                    out[i, j] = cells(value, rect.cell(i, j))[0, 0]
        self.book.cache(rect, numbers_if_all(out))

    def formula(self, cell, text):
        """A formula already rendered (a field's): the references in its text are its operands."""
        self.array(cell, text.replace("{", "{{").replace("}", "}}"), {})

    def finish(self, names):
        """Evaluate again what read cells or names made after it, now that the book is complete (`names`: every
        defined name), until nothing more can be."""
        self.named, self.book.complete = names, True
        while self.pending:
            waiting, self.pending = self.pending, []
            for method, *args in waiting:
                method(*args)
            if len(self.pending) == len(waiting):
                break

    # --- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, template, refs_per_item, sheet):
        """The formula (written on `sheet`) for a batch of operand sets, all of one shape: (B, rows, cols), or
        None while an operand's values are unknown."""
        found = [self.operands(template, refs, sheet) for refs in refs_per_item]
        if any(f is None for f in found):
            return None
        texts = {text for text, _, _ in found}
        if len(texts) > 1:  # an operand given as text that differs between items
            results = [self.evaluate(template, [refs], sheet) for refs in refs_per_item]
            return None if any(r is None for r in results) else np.concatenate(results)
        env = {}
        for key in found[0][1]:
            # an operand every item shares (a weight matrix) is passed once and broadcast, not copied B times
            if all(rects[key] == found[0][2][key] for _, _, rects in found):
                env[key] = np.asarray(found[0][1][key])[None]
            else:
                env[key] = np.stack([np.asarray(e[key]) for _, e, _ in found])
        try:
            result = parse(texts.pop()).evaluate(env, self.name_value)
        except (Unsupported, RecursionError):  # nested beyond Python's stack: past Excel's limits, which build refuses
            return None
        return np.broadcast_to(result, (len(found),) + result.shape[1:])  # items that share every operand

    def operands(self, template, refs, sheet):
        """(formula text, {placeholder: value}): a Rect operand stays a placeholder bound to its cells' values,
        anything else is formula text, as Tab renders it, whose cell references become placeholders too. None
        while an operand's values are unknown."""
        rects, text = {}, {}
        for key, ref in refs.items():
            if isinstance(ref, Rect):
                rects[key], text[key] = ref, "{" + key + "}"
            else:
                text[key] = ref
        formula = template.format(**text)
        if "!" in formula or "$" in formula:  # references rendered into the text
            formula = references_as_operands(formula, sheet, rects)
        env = {}
        for key, rect in rects.items():
            value = self.value(rect)
            if value is None:
                return None
            env[key] = errors_as_nan(value)
        return formula, env, rects

    def name_value(self, name):
        rect = self.named.get(name)
        value = None if rect is None else self.value(rect)
        return None if value is None else errors_as_nan(value)

    def value(self, rect):
        if self.working is not None and inside(rect, self.working[0]):
            target, out = self.working
            part = out[rect.top - target.top : rect.bottom - target.top + 1,
                       rect.left - target.left : rect.right - target.left + 1]  # fmt: skip
            return None if any(v is None for v in part.flat) else numbers_if_all(part)
        return self.book.value(rect)


def batch_key(refs):
    """Cells evaluated in one batch share this: their operands' shapes, and each large operand itself. A batch
    stacks an operand that differs between its cells, a copy per cell; a large one (a column of the vocabulary's
    embeddings, which every position's LOOKUP reads) is shared within its batch instead, passed once."""
    return tuple(
        (k, (r if r.height * r.width > SHARED_OPERAND_CELLS else (r.height, r.width)) if isinstance(r, Rect) else r)
        for k, r in refs.items()
    )


def references_as_operands(formula, sheet, rects):
    """Formula text with each rendered cell reference (outside its strings) replaced by a placeholder, the
    Rect it reads added to `rects`."""
    pieces = []
    for part in re.split(f"({_STRING.pattern})", formula):
        if part.startswith('"'):
            pieces.append(part)
            continue

        def operand(m):
            ref = m.group(1)
            rect = parse_ref(ref if "!" in ref else f"'{sheet}'!{ref}")
            if rect is None:
                return ref
            key = f"ref{len(rects)}"
            rects[key] = rect
            return "{" + key + "}"

        pieces.append(_REFERENCE.sub(operand, part))
    return "".join(pieces)


def cells(result, rect):
    """An evaluated result as the cells of `rect` show it: errors (NaN) as #DIV/0!, the only error a book's
    cells hold when it is built."""
    result = np.broadcast_to(result, (rect.height, rect.width))
    if result.dtype == object:
        return numbers_if_all(np.array([[DIV0 if v != v else v for v in row] for row in result], object))
    if result.dtype.kind == "f" and np.isnan(result).any():
        shown = result.astype(object)
        shown[np.isnan(result)] = DIV0  # (np.where would turn it into a plain str)
        return shown
    return result


def errors_as_nan(values):
    """Cells as the evaluator takes them: an error (a CellError) as NaN."""
    values = np.asarray(values)
    if values.dtype != object:
        return values
    return np.array([[np.nan if isinstance(v, CellError) else v for v in row] for row in values], object)


def numbers_if_all(values):
    """An object array of numbers only as float64 (what reads it computes at numpy's speed)."""
    if values.dtype == object and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in values.flat
    ):
        return values.astype(float)
    return values


def inside(rect, outer):
    return (
        rect.sheet == outer.sheet
        and outer.top <= rect.top
        and rect.bottom <= outer.bottom
        and outer.left <= rect.left
        and rect.right <= outer.right
    )


def overlaps(rect, other):
    return (
        rect.sheet == other.sheet
        and rect.top <= other.bottom
        and other.top <= rect.bottom
        and rect.left <= other.right
        and other.left <= rect.right
    )
