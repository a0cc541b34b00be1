"""Excel's limits on one formula, checked before a book is written: Excel cannot hold a formula beyond them
(it "repairs" the file, dropping the formula), while LibreOffice and Gnumeric, which eval uses, accept it.

The text is counted as Excel counts it: without the leading '='. Most formulas are far from every limit,
which str.count shows at C speed; only the rare long one is scanned.
"""

import re
from itertools import repeat

from xlgpt.package import XlgptError
from xlgpt.sheet.cells import Cells, Formula, RegionFormula, cell_name

MAX_LENGTH = 8192  # characters
MAX_NESTING = 64  # function calls inside function calls
MAX_ARGUMENTS = 255  # arguments of one function call

# What the scanner looks at: a string literal ("" inside is a quote), a quoted sheet name ('' likewise), an
# array constant {..} (its commas separate elements, not arguments), "NAME(" opening a function call, "("
# opening a group, ")" and ",". Everything else is skipped.
_TOKEN = re.compile(r'"[^"]*(?:""[^"]*)*"|\'[^\']*(?:\'\'[^\']*)*\'|\{[^}]*\}|([A-Za-z_][A-Za-z0-9_.]*)?\(|[),]')


def scan(text):
    """(deepest nesting of function calls, most arguments of one call, that call's function name)."""
    stack = []  # per open parenthesis: [function name, commas so far], or None for a group
    deepest = calls = most = 0
    widest = None
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token[-1] == "(":  # a string, quoted name or array constant ends otherwise
            if m.group(1):
                calls += 1
                deepest = max(deepest, calls)
                stack.append([m.group(1), 0])
            else:
                stack.append(None)
        elif token == ")" and stack:
            call = stack.pop()
            if call:
                calls -= 1
                if call[1] + 1 > most:
                    most, widest = call[1] + 1, call[0]
        elif token == "," and stack and stack[-1]:  # a comma in a group is the union operator
            stack[-1][1] += 1
    return deepest, most, widest


def problem(text):
    """Which of Excel's limits formula `text` (without '=') breaks, as words, or None."""
    if len(text) > MAX_LENGTH:
        return f"a formula of {len(text):,} characters; Excel allows at most {MAX_LENGTH:,}"
    if text.count("(") <= MAX_NESTING and text.count(",") < MAX_ARGUMENTS:
        return None  # too few parentheses to nest deeper, too few commas for more arguments
    deepest, most, name = scan(text)
    if deepest > MAX_NESTING:
        return f"function calls nested {deepest} deep; Excel allows at most {MAX_NESTING}"
    if most > MAX_ARGUMENTS:
        return f"{most} arguments to {name}; Excel allows at most {MAX_ARGUMENTS}"
    return None


def check_formulas(sheets):
    """Raise XlgptError naming the first formula cell (tab!cell) beyond one of Excel's limits."""

    for sheet in sheets:
        # a tab's formulas at C speed (map); only a tab that may break a limit is looked at cell by cell
        texts = [b.formula for b in sheet.blocks if isinstance(b, RegionFormula)] + [
            v for b in sheet.blocks if isinstance(b, Cells) for row in b.rows for v in row if type(v) is Formula
        ]
        if texts and (
            max(map(len, texts)) > MAX_LENGTH
            or max(map(str.count, texts, repeat("("))) > MAX_NESTING
            or max(map(str.count, texts, repeat(","))) >= MAX_ARGUMENTS
        ):
            for b in sheet.blocks:
                cells = (
                    [(b.top, b.left, b.formula)]
                    if isinstance(b, RegionFormula)
                    else [
                        (b.top + i, b.left + j, v)
                        for i, row in enumerate(b.rows)
                        for j, v in enumerate(row)
                        if type(v) is Formula
                    ]
                    if isinstance(b, Cells)
                    else []
                )
                for row, col, text in cells:
                    why = problem(text)
                    if why:
                        raise XlgptError(f"{sheet.name}!{cell_name(row, col)}: {why}")
