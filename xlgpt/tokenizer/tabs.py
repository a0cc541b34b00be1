"""GPT-2's tokenizer as spreadsheet formulas: type text into one cell and the sheet computes the token ids.

Each step of bpe.py is a titled row with one formula per character or byte slot, the same formula along the
row (`slot_row`: {x} reads row x at this slot, {row_x} the whole row, a neighbour is the next cell), so
Excel, LibreOffice, Gnumeric, IronCalc and the `formulas` package all compute it: no function has to work
element by element over a range (IronCalc's do not all, docs/engines.md).

- **Prompt**: the Prompt cell, a status ("ok" or why the text does not fit), the token count and ids.
- **Chars**: one column per character: code unit, code point (Excel's UTF-16 surrogate pairs joined),
  UTF-8 length, class, then bpe.RULES (rendered by `Formulas`): where pieces start, piece numbers.
- **Bytes**: the UTF-8 bytes of the text in one row, with their piece, GPT-2 byte symbol and token id.
- **BPE**: one block per merge round. Tokens sit at the slot of their first byte ("" elsewhere) with the
  slot of their last byte; each piece's lowest rank is a running minimum along the piece, read at its last
  slot, and runs of the same pair merge left to right (every other one, counted from the run's start).
- Tables: Merges (by pair key = left id * V + right id: text comparison ignores case, numbers do not),
  Byte symbols, Unicode classes, Token texts.
"""

import itertools

import numpy as np

from xlgpt.package import XlgptError
from xlgpt.sheet import contract
from xlgpt.sheet.cells import column_letter
from xlgpt.sheet.layout import BOLD, INPUT, Book, Range, Rect, Tab
from xlgpt.sheet.styles import PADDING, when
from xlgpt.sheet.text import prompt_value
from xlgpt.sheet.writer import write_workbook
from xlgpt.tokenizer.bpe import CONTRACTIONS, RULES, Capacity, Values, capacity_for, contraction, encode, needs
from xlgpt.tokenizer.tables import (
    CLASS_NAMES,
    bytes_to_unicode,
    char_class,
    class_runs,
    display,
    symbol_text,
    tables,
    token_texts,
)

HIGH, LOW, PAIR_BASE = (55296, 56319), (56320, 57343), 65536  # UTF-16 surrogates (Excel's MID/UNICODE)
TOKEN_TEXTS = "Token texts"


def slot_row(tab, rect, template, **refs):
    """One formula per slot (column) of the row `rect`, written once (Tab.along): in `template`, {x} is the cell of
    row x at this slot (x as wide as `rect`, or one cell) and {row_x} the whole of x, e.g. a lookup's range."""
    moving = {k: v for k, v in refs.items() if isinstance(v, Rect) and v.width == rect.width > 1}
    fixed = {k: v for k, v in refs.items() if k not in moving and not (isinstance(v, Rect) and v.width > 1)}
    whole = {
        f"row_{k}": Range(v.sheet, v.top, v.left, v.height, v.width) if isinstance(v, Rect) else v
        for k, v in refs.items()
    }
    return tab.along(rect, template, moving, **fixed, **whole)


class Formulas:
    """The spreadsheet backend of bpe.RULES: each call returns a slot_row template; a row is read through a
    placeholder for the row shifted by `offset` columns (column B, left of the first slot, stays empty)."""

    def __init__(self, rows, position):
        self.rows, self.position, self.refs = rows, position, {}

    def ref(self, rect):
        key = f"r{len(self.refs)}"
        self.refs[key] = rect
        return "{" + key + "}"

    def at(self, name, offset=0):
        row = self.rows[name]
        return self.ref(row.cols(offset, offset + row.width))

    def first(self):
        return f"{self.ref(self.position)}=1"

    @staticmethod
    def if_(cond, a, b):
        return f"IF({cond},{a},{b})"

    @staticmethod
    def _compare(a, op, b):
        return f"IF(ISNUMBER({a}),{a}{op}{b},FALSE)"

    def equal(self, a, b):
        return self._compare(a, "=", b)

    def less(self, a, b):
        return self._compare(a, "<", b)

    def more(self, a, b):
        return self._compare(a, ">", b)

    @staticmethod
    def plus(a, n):
        return f"{a}{n:+d}"

    @staticmethod
    def blank(a):
        return f"NOT(ISNUMBER({a}))"

    @staticmethod
    def both(a, b):
        return f"({a})*({b})"

    @staticmethod
    def either(a, b):
        return f"(({a})+({b})>0)"


def _exact_any(text, options):
    return "(" + "+".join(f'EXACT({text},"{o}")' for o in options) + ">0)"


def chars_values(text, cap):
    """Each row of the Chars tab for `text` (code points, as LibreOffice and Gnumeric read characters), computed
    by bpe.RULES' Python backend over all cap.chars slots ("" past the text)."""
    n, past = len(text), [""] * (cap.chars - len(text))
    rows = {"character": list(text) + past, "code unit": [ord(c) for c in text] + past}
    rows["code point"] = rows["code unit"]
    rows["UTF-8 bytes"] = [len(c.encode("utf-8")) for c in text] + [0] * len(past)
    rows["class"] = [char_class(ord(c)) for c in text] + past
    rows["contraction"] = [contraction(text, i) for i in range(n)] + [0] * len(past)
    blank = {k: [None if v == "" else v for v in row] for k, row in rows.items()}  # Values: None past the text
    for key, _, rule in RULES:
        blank[key] = [int(rule(Values(blank, i))) for i in range(cap.chars)]
        rows[key] = blank[key]
    rows["piece"] = list(np.cumsum(rows["starts"]))
    rows["first byte"] = list(np.cumsum([0] + rows["UTF-8 bytes"][:-1]) + 1)
    rows["key"] = [
        f + i + 1 if i >= n else f - 0.5 if rows["UTF-8 bytes"][i] == 0 else f for i, f in enumerate(rows["first byte"])
    ]
    return rows


def chars_tab(book, name, prompt, cap, text=None):
    """Characters: code points, classes, and bpe.RULES splitting the text into pieces."""
    tab = book.add(
        Tab(
            name,
            "Characters: code points, classes and GPT-2's pre-tokenization into pieces",
            "tokenizer",
            {1: 44, 2: 4},
        )
    )
    position = tab.header("character number (from 1, as MID counts)", cap.chars)
    tab.put(position, [list(range(1, cap.chars + 1))], BOLD)
    tab.freeze()
    rows = {}

    def row(name, label, text, **refs):
        rows[name] = slot_row(tab, tab.line(label, cap.chars), text, position=position, **refs)
        return rows[name]

    char = row("character", "character", "MID({prompt},{position},1)", prompt=prompt)
    unit = row(
        "code unit", "code (UNICODE; Excel: a UTF-16 unit)", 'IF({char}="","",_xlfn.UNICODE({char}&" "))', char=char
    )
    shifted = {"unit": unit, "before": unit.cols(-1, cap.chars - 1), "after": unit.cols(1, cap.chars + 1)}
    is_high = lambda u: f"IF(ISNUMBER({{{u}}}),({{{u}}}>={HIGH[0]})*({{{u}}}<={HIGH[1]}),0)"
    is_low = lambda u: f"IF(ISNUMBER({{{u}}}),({{{u}}}>={LOW[0]})*({{{u}}}<={LOW[1]}),0)"
    joined = lambda hi, lo: f"({{{hi}}}-{HIGH[0]})*1024+{{{lo}}}-{LOW[0]}+{PAIR_BASE}"
    second_half = f"{is_low('unit')}*{is_high('before')}"
    code = row(
        "code point",
        "code point (surrogate pairs joined)",
        f"IF(ISNUMBER({{unit}}),IF({is_high('unit')}*{is_low('after')},{joined('unit', 'after')},"
        f'IF({second_half},{joined("before", "unit")},{{unit}})),"")',
        **shifted,
    )
    size = "IF({code}<128,1,IF({code}<2048,2,IF({code}<65536,3,4)))"
    utf8 = row(
        "UTF-8 bytes",
        "UTF-8 bytes (0: second half of a surrogate pair)",
        f"IF(ISNUMBER({{code}}),IF({second_half},0,{size}),0)",
        code=code,
        **shifted,
    )
    row(
        "class",
        "class (1 letter, 2 number, 3 other, 4 whitespace)",
        "IF(ISNUMBER({code}),VLOOKUP({code}," + contract.CLASS_TABLE + ',2,TRUE),"")',
        code=code,
    )
    after = lambda n: f"MID({{prompt}},{{position}}+1,{n})"
    row(
        "contraction",
        "contraction length ('s 't 'm 'd: 2, 're 've 'll: 3)",
        f'IF(EXACT({{char}},"\'"),IF({_exact_any(after(1), CONTRACTIONS[0])},2,'
        f"IF({_exact_any(after(2), CONTRACTIONS[1])},3,0)),0)",
        char=char,
        prompt=prompt,
    )
    for key, label, rule in RULES:
        x = Formulas(rows, position)
        row(key, label, f"0+{rule(x)}", **x.refs)
    starts = rows["starts"]
    piece = row("piece", "piece number", 'SUMIF({row_position},"<="&{position},{row_starts})', starts=starts)
    first = row("first byte", "first byte", 'SUMIF({row_position},"<"&{position},{row_utf8})+1', utf8=utf8)
    key = row(
        "key",
        "byte lookup key (increasing)",
        'IF({char}="",{first}+{position},IF({utf8}=0,{first}-0.5,{first}))',
        char=char,
        first=first,
        utf8=utf8,
    )
    if text is not None and len(text) <= cap.chars and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        for row_name, values in chars_values(text, cap).items():
            book.cache(rows[row_name], np.array(values, object))
    rows.update(position=position, key=key, piece=piece, first=first)
    return rows


def bytes_values(text, cap, tok):
    """Each row of the Bytes tab for `text`: every UTF-8 byte with its character (1-based), piece, code point,
    byte and GPT-2 symbol and id; "" past the text (piece: cap.chars + 1)."""
    chars = chars_values(text, cap)
    table, symbols = tables(tok), bytes_to_unicode()
    rows = {
        k: []
        for k in (
            "character position",
            "character",
            "piece",
            "code point",
            "length",
            "byte of char",
            "byte",
            "symbol",
            "id",
        )
    }
    for i, c in enumerate(text):
        for t, b in enumerate(c.encode("utf-8")):
            for k, v in zip(
                rows,
                (
                    i + 1,
                    c,
                    chars["piece"][i],
                    ord(c),
                    len(c.encode("utf-8")),
                    t,
                    b,
                    symbols[b],
                    "none" if table.byte_ids[b] is None else table.byte_ids[b],
                ),
            ):
                rows[k].append(v)
    past = cap.bytes - len(rows["byte"])
    for k in rows:
        rows[k] += [cap.chars + 1 if k == "piece" else ""] * past
    piece = np.array(rows["piece"])
    rows["first slot"] = [int(np.searchsorted(piece, p, "left")) + 1 for p in piece]
    rows["last slot"] = [int(np.searchsorted(piece, p, "right")) for p in piece]
    return rows


def bytes_tab(book, name, chars, cap, text=None, tok=None):
    """The UTF-8 bytes in one row: their character, piece, byte value, GPT-2 symbol and token id."""
    tab = book.add(
        Tab(name, "UTF-8 bytes of the pieces, GPT-2's byte symbols and initial token ids", "tokenizer", {1: 44, 2: 4})
    )
    slot = tab.header("byte slot (from 1)", cap.bytes)
    tab.put(slot, [list(range(1, cap.bytes + 1))], BOLD)
    tab.freeze()
    rows = {"slot": slot}

    def row(name, label, text, **refs):
        rows[name] = slot_row(tab, tab.line(label, cap.bytes), text, slot=slot, **refs)
        return rows[name]

    at = chars["position"]
    char = row(
        "character position",
        "character number",
        'IF({slot}>SUM({row_utf8}),"",MATCH({slot},{row_keys},1))',
        utf8=chars["UTF-8 bytes"],
        keys=chars["key"],
    )
    of_char = lambda what, missing='""': f"IF(ISNUMBER({{char}}),LOOKUP({{char}},{{row_at}},{{row_{what}}}),{missing})"
    row("character", "character", of_char("x"), char=char, at=at, x=chars["character"])
    row(
        "piece",
        f"piece number ({cap.chars + 1}: no text)",
        of_char("x", cap.chars + 1),
        char=char,
        at=at,
        x=chars["piece"],
    )
    code = row("code point", "code point", of_char("x"), char=char, at=at, x=chars["code point"])
    n = row("length", "UTF-8 length", of_char("x"), char=char, at=at, x=chars["UTF-8 bytes"])
    t = row(
        "byte of char",
        "byte of the character (0 = lead)",
        'IF(ISNUMBER({char}),{slot}-LOOKUP({char},{row_at},{row_first}),"")',
        char=char,
        at=at,
        first=chars["first byte"],
    )
    # a lead byte is 0, 192, 224 or 240 plus the top bits (arithmetic: Gnumeric's CHOOSE takes no array index)
    value = row(
        "byte",
        "UTF-8 byte",
        "IF(ISNUMBER({char}),IF({t}=0,IF({n}=1,0,256-2^(8-{n}))+INT({code}/64^({n}-1)),"
        '128+MOD(INT({code}/64^({n}-1-{t})),64)),"")',
        char=char,
        t=t,
        n=n,
        code=code,
    )
    for key, label, col in (("symbol", "GPT-2 byte symbol", 2), ("id", "initial token id", 3)):
        row(key, label, f'IF(ISNUMBER({{byte}}),VLOOKUP({{byte}},{contract.BYTE_TABLE},{col},TRUE),"")', byte=value)
    piece = rows["piece"]
    row("first slot", "first slot of the piece", "IFERROR(MATCH({piece}-0.5,{row_piece},1),0)+1", piece=piece)
    row("last slot", "last slot of the piece", "MATCH({piece}+0.5,{row_piece},1)", piece=piece)
    if book.value(chars["key"]) is not None and len(text.encode("utf-8")) <= cap.bytes:
        for row_name, values in bytes_values(text, cap, tok).items():
            book.cache(rows[row_name], np.array(values, object))
    return rows


def merge_round(tab, head, tokens, ends, n, last=False, values=None):
    """One merge round (bpe.merge_round for every piece at once) below `tokens` and `ends`; returns the
    next round's (tokens, ends), or the final round's rank row when `last`. `values`: a RoundValues whose rows
    the cells carry cached."""
    width, k = tokens.width, head["keys"]
    refs = dict(head["refs"], T=tokens, E=ends)

    def row(name, label, text):
        rect = tab.line(label, width)
        refs[name] = slot_row(tab, rect, text, left=rect.cols(-1, width - 1), **refs)  # {left}: the previous slot
        if values is not None:
            values.cache(refs[name], values.rows[name])
        return refs[name]

    pair = "{T}*" + str(k["V"]) + "+{R}"
    row(
        "R",
        "right neighbour (the token at last slot + 1)",
        'IF(ISNUMBER({T}),IF({E}<{last},LOOKUP({E}+1,{row_slot},{row_T}),""),"")',
    )
    rank = row(
        "K",
        "rank of the pair (token, right neighbour)",
        f"IF(ISNUMBER({{R}}),IF(VLOOKUP({pair},{contract.MERGE_TABLE},1,TRUE)={pair},"
        f'VLOOKUP({pair},{contract.MERGE_TABLE},2,TRUE),""),"")',
    )
    if last:
        return rank
    big, none = k["big"], k["none"]
    # A piece's lowest rank: a running minimum from its first slot (each cell reads the one before it), read at
    # its last slot; a run's start likewise carried along the row. Each cell does a fixed amount of work.
    at = (lambda row, slot: f"INDEX({{row_{row}}},1,{slot})") if width > 1 else (lambda row, slot: f"{{{row}}}")
    row(
        "low",
        f"lowest rank so far in the piece ({big - 1}: no pair)",
        f"MIN(IF(ISNUMBER({{K}}),{{K}},{big - 1}),IF({{slot}}>{{first}},{{left}},{big - 1}))",
    )
    row("Lo", f"lowest rank in the piece ({big - 1}: no pair)", at("low", "{last}"))
    lowest = "IF(ISNUMBER({K}),{K}={Lo},FALSE)"
    before = "2*{slot}-{E}-1"  # where the previous token starts if it is the same token (same pair)
    row(
        "run",
        f"a run of the lowest pair starts here ({none}: no)",
        f"IF({lowest},IF({before}>={{first}},IF(LOOKUP({before},{{row_slot}},{{row_K}})={{K}},{none},{{slot}}),{{slot}}),"
        f"{none})",
    )
    row("start", "the latest run start (0: none yet)", f"IF({{run}}<{none},{{slot}},IF({{slot}}>1,{{left}},0))")
    row(
        "M",
        f"merges: the slot of the neighbour it absorbs ({none}: none)",
        f"IF({lowest},IF(MOD(({{slot}}-{{start}})/({{E}}-{{slot}}+1),2)=0,{{E}}+1,{none}),{none})",
    )
    # the markers for "no pair" and "none" fade, so that the merges stand out
    tab.heatmap(refs["Lo"], when(f"{column_letter(refs['Lo'].left)}{refs['Lo'].top}={big - 1}", PADDING))
    markers = Rect(tab.name, refs["run"].top, refs["run"].left, refs["M"].bottom - refs["run"].top + 1, width)
    tab.heatmap(markers, when(f"{column_letter(markers.left)}{markers.top}={none}", PADDING))
    tab.title(f"After round {n}")
    # a token is absorbed when the M row names its slot (exact MATCH: no sorted copy of M needed)
    new = row(
        "T2",
        f"tokens after round {n}",
        f"IF(ISNUMBER({{T}}),IF({{M}}<{none},VLOOKUP({pair},{contract.MERGE_TABLE},3,TRUE),"
        f'IF(ISNUMBER(MATCH({{slot}},{{row_M}},0)),"",{{T}})),"")',
    )
    end = row(
        "E2",
        "last slot of each token",
        f'IF(ISNUMBER({{T2}}),IF({{M}}<{none},LOOKUP({{M}},{{row_slot}},{{row_E}}),{{E}}),"")',
    )
    return new, end


class RoundValues:
    """The BPE tab's rows for one text, round by round, as its formulas compute them ("" for an empty cell):
    each row the same function of the rows above it as its formula, over every byte slot at once."""

    def __init__(self, book, byts, tok, keys):
        self.book, self.table, self.keys = book, tables(tok), keys
        self.piece, self.first, self.last = (list(book.value(byts[k])[0]) for k in ("piece", "first slot", "last slot"))
        self.slots = range(1, len(self.piece) + 1)
        self.rows = {"T": list(book.value(byts["id"])[0])}
        self.rows["E"] = [s if number(t) else "" for s, t in zip(self.slots, self.rows["T"])]

    def cache(self, rect, values):
        self.book.cache(rect, np.array(values, object))

    def next_round(self):
        """Compute the rows of a round from its T and E; then its T2 and E2 become the next round's T and E."""
        r, table, big, none = self.rows, self.table, self.keys["big"], self.keys["none"]
        T, E = r["T"], r["E"]
        merge = lambda s: table.merges.get(T[s - 1] * table.V + r["R"][s - 1])
        r["R"] = [T[e] if number(t) and e < last else "" for t, e, last in zip(T, E, self.last)]
        r["K"] = [merge(s)[0] if number(r["R"][s - 1]) and merge(s) else "" for s in self.slots]
        r["low"] = []
        for s, k, f in zip(self.slots, r["K"], self.first):
            r["low"].append(min(k if number(k) else big - 1, r["low"][-1] if s > f else big - 1))
        r["Lo"] = [r["low"][last - 1] for last in self.last]
        lowest = [number(k) and k == lo for k, lo in zip(r["K"], r["Lo"])]
        before = lambda s: 2 * s - E[s - 1] - 1
        r["run"] = [
            (none if before(s) >= self.first[s - 1] and r["K"][before(s) - 1] == r["K"][s - 1] else s)
            if lowest[s - 1]
            else none
            for s in self.slots
        ]
        r["start"] = list(itertools.accumulate((s if run < none else 0 for s, run in zip(self.slots, r["run"])), max))
        r["M"] = [
            (E[s - 1] + 1 if (s - r["start"][s - 1]) % (2 * (E[s - 1] - s + 1)) == 0 else none)
            if lowest[s - 1]
            else none
            for s in self.slots
        ]
        absorbed = set(r["M"])
        r["T2"] = [
            (merge(s)[1] if r["M"][s - 1] < none else "" if s in absorbed else T[s - 1]) if number(T[s - 1]) else ""
            for s in self.slots
        ]
        r["E2"] = [
            (E[r["M"][s - 1] - 1] if r["M"][s - 1] < none else E[s - 1]) if number(t) else ""
            for s, t in zip(self.slots, r["T2"])
        ]
        return r

    def advance(self):
        self.rows = {"T": self.rows["T2"], "E": self.rows["E2"]}


def number(x):
    return not isinstance(x, str) and x is not None


def bpe_tab(book, name, byts, tok, cap):
    """Merge rounds, one titled block each; returns the final tokens, their order and the unfinished check."""
    tab = book.add(
        Tab(
            name,
            "Byte-pair merges: each round, each piece merges every occurrence of its lowest-ranked pair",
            "tokenizer",
            {1: 62, 2: 4},  # its longest label in full
        )
    )
    table = tables(tok)
    slot = tab.header("byte slot (from 1)", cap.bytes)
    tab.put(slot, [list(range(1, cap.bytes + 1))], BOLD)
    head = {"slot": slot}
    for key, label in (
        ("piece", "piece number"),
        ("first", "first slot of the piece"),
        ("last", "last slot of the piece"),
    ):
        head[key] = slot_row(
            tab, tab.header(label, cap.bytes), "{x}", x=byts[{"first": "first slot", "last": "last slot"}.get(key, key)]
        )
    tab.freeze()
    big = 10 ** len(str(len(table.merges) + 1))
    keys = {"V": table.V, "big": big, "none": 10 ** len(str((cap.chars + 2) * big + cap.bytes))}
    head = {"refs": head, "keys": keys}
    tab.note(
        "Each round: 7 rows find the merges, 2 apply them. Cells hold token ids (their texts: the Prompt tab's "
        f"last row, and the Vocabulary); {big - 1} and {keys['none']} mark 'no pair' and 'none' and are faded.",
        gap=1,
    )
    tab.title("Round 1")
    tokens = slot_row(tab, tab.line("tokens before round 1", cap.bytes), "{x}", x=byts["id"])
    ends = slot_row(
        tab, tab.line("last slot of each token", cap.bytes), 'IF(ISNUMBER({T}),{slot},"")', T=tokens, slot=slot
    )
    values = RoundValues(book, byts, tok, keys) if book.value(byts["id"]) is not None else None
    if values:
        for rect, (_, x) in zip(
            [*head["refs"].values()][1:] + [tokens, ends],
            [
                ("piece", values.piece),
                ("first", values.first),
                ("last", values.last),
                ("T", values.rows["T"]),
                ("E", values.rows["E"]),
            ],
        ):
            values.cache(rect, x)
    for n in range(1, cap.rounds + 1):
        if values:
            values.next_round()
        tokens, ends = merge_round(tab, head, tokens, ends, n, values=values)
        if values:
            values.advance()
        tab.skip()
        if n < cap.rounds:
            tab.title(f"Round {n + 1}")
    tab.title("Finished? Pairs that would still merge")
    if values:
        values.next_round()
    unfinished = merge_round(tab, head, tokens, ends, cap.rounds + 1, last=True, values=values)
    held = slot_row(
        tab,
        tab.line(f"slots holding tokens ({keys['none']}: none)", cap.bytes),
        f"IF(ISNUMBER({{T}}),{{slot}},{keys['none']})",
        T=tokens,
        slot=slot,
    )
    order = slot_row(
        tab, tab.line("slots holding tokens, in order", cap.bytes), "SMALL({row_held},{slot})", held=held, slot=slot
    )
    if values:
        held_values = [s if number(t) else keys["none"] for s, t in zip(values.slots, values.rows["T"])]
        values.cache(held, held_values)
        values.cache(order, sorted(held_values))
    return {"tokens": tokens, "order": order, "unfinished": unfinished, "slot": slot}


def prompt_block(tab, text, cap):
    """The Prompt cell and the rows the tokenizer fills in below it: status, count, ids, texts."""
    block = {"prompt": tab.field("Prompt (type your text here)", prompt_value(text), INPUT)}
    block["status"] = tab.field("Status")
    block["count"] = tab.field("Number of tokens")
    position = tab.line("token position", cap.tokens, style=BOLD)
    tab.put(position, [list(range(cap.tokens))], BOLD)
    block.update(
        position=position, ids=tab.line("token id", cap.tokens, style=BOLD), texts=tab.line("token text", cap.tokens)
    )
    tab.note(
        f"Capacity: {cap.chars} characters, {cap.bytes} UTF-8 bytes, {cap.rounds} merge rounds, {cap.tokens} tokens",
        gap=1,
    )
    return block


def fill_prompt_block(tab, block, chars, byts, bpe, cap, vocabulary):
    n_bytes = "SUM({utf8})"
    n_tokens = "COUNT({tokens})"
    limit = lambda what, n: f'"Too long: "&{what}&" {n}; this sheet holds at most '
    status = (
        f'IF(LEN({{prompt}})>{cap.chars},{limit("LEN({prompt})", "characters")}{cap.chars}.",'
        f'IF({n_bytes}>{cap.bytes},{limit(n_bytes, "UTF-8 bytes")}{cap.bytes}.",'
        f'IF(COUNT({{ids}})<{n_bytes},"The tokenizer has no token for some bytes of this text.",'
        f'IF(COUNT({{unfinished}})>0,"Not finished: merges still apply after {cap.rounds} rounds (a piece is '
        f'too long for this sheet).",'
        f'IF({n_tokens}>{cap.tokens},"Too many tokens: "&{n_tokens}&"; this sheet holds at most {cap.tokens}.",'
        f'"ok")))))'
    )
    tab.put(
        block["status"],
        [
            [
                tab.f(
                    status,
                    prompt=block["prompt"],
                    utf8=chars["UTF-8 bytes"],
                    ids=byts["id"],
                    unfinished=bpe["unfinished"],
                    tokens=bpe["tokens"],
                )
            ]
        ],
        BOLD,
    )
    ok = '{status}="ok"'
    tab.put(
        block["count"], [[tab.f(f'IF({ok},COUNT({{tokens}}),"")', status=block["status"], tokens=bpe["tokens"])]], BOLD
    )
    slot_row(
        tab,
        block["ids"],
        f'IF({ok},IF({{position}}>={{count}},"",LOOKUP(LOOKUP({{position}}+1,{{row_slot}},{{row_order}}),'
        f'{{row_slot}},{{row_tokens}})),"")',
        status=block["status"],
        position=block["position"],
        count=block["count"],
        slot=bpe["slot"],
        order=bpe["order"],
        tokens=bpe["tokens"],
    )
    # INDEX by an array of ids is not portable (the `formulas` package): one formula per cell here
    tab.each(
        block["texts"],
        'IF(ISNUMBER({id}),INDEX({vocabulary},{id}+1),"")',
        id=lambda i, j: block["ids"].col(j),
        vocabulary=vocabulary,
    )


def cache_prompt_block(book, block, tok, text, cap):
    """The results the Prompt block shows for `text`, from the tokenizer this sheet mirrors (bpe.py), as the cells'
    cached values: status "ok", the count, ids and texts (nothing for a text the sheet cannot take)."""
    try:
        ids = encode(tok, text)
    except XlgptError:
        return
    chars, nbytes, rounds, tokens = needs(tok, text)
    if chars > cap.chars or nbytes > cap.bytes or rounds > cap.rounds or tokens > cap.tokens:
        return
    symbols = {i: s for s, i in tables(tok).vocab.items()}
    texts = [display(symbol_text(symbols[i])) for i in ids]  # as token_texts, for these ids only
    padding = [""] * (cap.tokens - len(ids))
    for rect, values in (
        (block["status"], "ok"),
        (block["count"], len(ids)),
        (block["ids"], ids + padding),
        (block["texts"], texts + padding),
    ):
        book.cache(rect, np.array(values, object))


def add_prompt(book, tab, tok, cap, text, suffix="", vocabulary=None):
    """One prompt's block on `tab` and its Chars/Bytes/BPE tabs; returns {contract name: Rect}."""
    block = prompt_block(tab, text, cap)
    chars = chars_tab(book, "Chars" + suffix, block["prompt"], cap, text)
    byts = bytes_tab(book, "Bytes" + suffix, chars, cap, text, tok)
    bpe = bpe_tab(book, "BPE" + suffix, byts, tok, cap)
    fill_prompt_block(tab, block, chars, byts, bpe, cap, vocabulary or book[TOKEN_TEXTS].vocabulary)
    cache_prompt_block(book, block, tok, text, cap)
    return {
        contract.PROMPT: block["prompt"],
        contract.TOKENIZER_STATUS: block["status"],
        contract.SHEET_TOKEN_COUNT: block["count"],
        contract.SHEET_TOKEN_IDS: block["ids"],
    }


def table_tabs(book, tok, vocabulary=True):
    """Merges (sorted by pair key), Byte symbols, Unicode classes and, unless the book already has its
    vocabulary's texts, Token texts; returns their defined names."""
    table = tables(tok)
    merges = book.add(
        Tab(
            "Merges",
            f"Merge table, sorted by pair key = left id * {table.V} + right id (rank: line "
            f"in the merges file, lower merges first)",
            "tables",
            {1: 24, 2: 4},
        )
    )
    tab_header(merges, "merge (as in the merges file)", ["pair key", "rank", "merged id", "left id", "right id"])
    rows = [[-1, "none", "none", None, None]]
    labels = [("(sentinel: no pair has a smaller key)", None)]
    for key in sorted(table.merges):
        rank, merged, line = table.merges[key]
        rows.append([key, rank, merged, key // table.V, key % table.V])
        labels.append((line, None))
    merge_rows = merges.put(merges.block(labels, 5), rows)
    names = {contract.MERGE_TABLE: merge_rows.cols(0, 3)}

    sym = bytes_to_unicode()
    symbols = book.add(
        Tab("Byte symbols", "GPT-2's byte-level alphabet: each byte's symbol and its token id", "tables")
    )
    tab_header(symbols, None, ["byte", "symbol", "token id"])
    names[contract.BYTE_TABLE] = symbols.put(
        symbols.block([(None, None)] * 256, 3),
        [[b, sym[b], "none" if table.byte_ids[b] is None else table.byte_ids[b]] for b in range(256)],
    )

    runs = class_runs()
    classes = book.add(
        Tab(
            "Unicode classes",
            "Character classes of GPT-2's regex, by code-point range (as Hugging Face tokenizers applies them)",
            "tables",
        )
    )
    tab_header(classes, None, ["first code point", "class", "last code point", "class name"])
    ends = [s for s, _ in runs[1:]] + [0x110000]
    class_rows = classes.put(
        classes.block([(None, None)] * len(runs), 4), [[s, k, e - 1, CLASS_NAMES[k]] for (s, k), e in zip(runs, ends)]
    )
    names[contract.CLASS_TABLE] = class_rows.cols(0, 2)
    if vocabulary:
        texts = book.add(Tab(TOKEN_TEXTS, "Each token's text (␣ space, ↵ newline, ⇥ tab)", "tables"))
        tab_header(texts, "token id", ["text"])
        texts.vocabulary = texts.put(
            texts.block([(i, None) for i in range(table.V)], 1), [[t] for t in token_texts(tok)]
        )
    return names


def tab_header(tab, label, columns):
    tab.put(tab.header(label, len(columns)), [columns], BOLD)
    tab.freeze()


# --- entry points ----------------------------------------------------------------------------------------


def add_tokenizer(book, tok, capacity, text, vocabulary=None):
    """Add the tokenizer to `book` (a layout.Book): the Prompt tab (its `.row` left at the next free row),
    Chars, Bytes, BPE and the table tabs. `vocabulary`: a Rect or defined name of a column of token texts
    the book already has (then no Token texts tab). Returns (the Prompt Tab, {contract name: Rect})."""
    cap = capacity or Capacity()
    prompt = book.add(
        Tab(
            "Prompt",
            "Your prompt: type text into the yellow cell, then recalculate (F9)",
            "prompt",
            {1: 30, 2: 4, 3: 60},
        )
    )
    prompt.skip()
    with book.values_by_writer():  # the tokenizer's Python mirror gives its cells' values
        names = table_tabs(book, tok, vocabulary is None)
        names.update(add_prompt(book, prompt, tok, cap, text, vocabulary=vocabulary))
    return prompt, names


def batch_book(tok, texts, capacities=None):
    """Several prompts in one book (to check many texts with one engine run): a Prompts tab with one block
    per text, each text's own tabs ("Chars 1", ...) and the shared tables; names numbered (Prompt_1, ...)."""
    caps = capacities or [capacity_for([t], tok) for t in texts]
    book = Book()
    prompts = book.add(Tab("Prompts", "Tokenizer batch: one block per prompt", "prompt", {1: 30, 2: 4, 3: 40}))
    prompts.skip()
    names = table_tabs(book, tok)
    for i, (text, cap) in enumerate(zip(texts, caps), 1):
        names.update(
            {contract.numbered(k, i): v for k, v in add_prompt(book, prompts, tok, cap, text, f" {i}").items()}
        )
    return book, names


def write_batch_book(path, tok, texts, capacities=None):
    book, names = batch_book(tok, texts, capacities)
    write_workbook(path, book.sheets(), names)
    return path


def write_tokenizer_book(path, tok, text, capacity=None):
    """A tokenizer-only workbook. For one text: the default capacity, enlarged if the text needs more
    (capacity_for([text], tok) gives the smallest book). For a list of texts: one batch book, each text
    with its own tabs sized by `capacity` or, without one, to the text."""
    if not isinstance(text, str):
        return write_batch_book(path, tok, list(text), None if capacity is None else [capacity] * len(text))
    if capacity is None:
        capacity = Capacity().at_least(capacity_for([text], tok))
    book = Book()
    _, names = add_tokenizer(book, tok, capacity, text)
    write_workbook(path, book.sheets(), names)
    return path
