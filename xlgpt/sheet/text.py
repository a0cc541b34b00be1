"""Text in a cell: a prompt written so that every engine reads back exactly that text, and read back
without running anything."""

import re

from xlgpt.sheet.cells import Formula

_NEEDS_FORMULA = re.compile("[\x00-\x08\x0b-\x1f\ufffe\uffff\ud800-\udfff]|_x[0-9A-Fa-f]{4}_")


def prompt_value(text):
    r"""The prompt cell's content: the text itself, or, when a plain text cell cannot carry it through every
    engine, a formula that builds it. XML readers turn \r into \n, characters XML cannot hold need
    Excel's _xHHHH_ escape (which openpyxl, and so `formulas`, does not decode, and which a literal
    "_x0041_" would trigger), and LibreOffice turns the tab of a multi-line cell into U+0001."""
    if not _NEEDS_FORMULA.search(text) and not ("\t" in text and "\n" in text):
        return text
    parts, literal = [], ""
    for ch in text:
        o = ord(ch)
        if o < 32 or o in (0xFFFE, 0xFFFF) or 0xD800 <= o <= 0xDFFF:
            if literal:
                parts.append('"' + literal.replace('"', '""') + '"')
                literal = ""
            parts.append(f"CHAR({o})" if o < 32 else f"_xlfn.UNICHAR({o})")
            continue
        literal += ch
        if ch == "_" or len(literal) >= 100:  # short literals (Excel: at most 255 characters), no "_x...._"
            parts.append('"' + literal.replace('"', '""') + '"')
            literal = ""
    if literal:
        parts.append('"' + literal.replace('"', '""') + '"')
    return Formula("&".join(parts))


_PROMPT_PART = re.compile(r'"((?:[^"]|"")*)"|CHAR\((\d{1,2})\)|_xlfn\.UNICHAR\((\d{1,7})\)')


def prompt_from_formula(formula):
    """The text a Prompt cell's formula computes, when it is one prompt_value writes ("..."&CHAR(n)&
    _xlfn.UNICHAR(n)...): evaluated by this parser of exactly that shape, then checked by writing it again.
    None for any other formula (nothing of the book is ever run to read it)."""
    body = formula[1:] if formula.startswith("=") else formula
    text, pos = [], 0
    while True:
        m = _PROMPT_PART.match(body, pos)
        if not m:
            return None
        literal, char, unichar = m.groups()
        if literal is not None:
            text.append(literal.replace('""', '"'))
        else:
            code = int(char or unichar)
            if code > 0x10FFFF:
                return None
            text.append(chr(code))
        pos = m.end()
        if pos == len(body):
            break
        if body[pos] != "&":
            return None
        pos += 1
    text = "".join(text)
    written = prompt_value(text)
    return text if isinstance(written, Formula) and str(written).lstrip("=") == body else None
