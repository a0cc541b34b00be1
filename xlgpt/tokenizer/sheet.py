"""GPT-2's tokenizer as spreadsheet formulas: type text into one cell and the sheet computes the token ids.

The book reproduces Hugging Face `tokenizers`' byte-level BPE (GPT-2's, add_prefix_space=False) in visible
steps, with classic functions only (MID, UNICODE, INDEX, MATCH, VLOOKUP, IF, ...; no arrays, no LET or
LAMBDA), so Excel, LibreOffice and the Python `formulas` package all compute it. UNICODE (Excel 2013+,
written _xlfn.UNICODE) is the one function newer than Excel 2010: CODE gives code-page bytes, not code
points, and nothing older reads a character's code point.

- **Prompt**: the input cell (defined name `Prompt`), a status message (`TokenizerStatus`: "ok" or why the
  text does not fit), the token count (`SheetTokenCount`) and the token ids (`SheetTokenIds`, "" after the
  last token and everywhere when the status is not "ok").
- **Chars**: one column per character: the character, its code (UTF-16 surrogate pairs joined, for Excel),
  its UTF-8 length, its class (letter, number, other, whitespace, looked up in the Unicode classes tab)
  and GPT-2's pre-tokenization regex
  ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``
  run as a left-to-right state machine: does the character start a new piece, the piece's kind, its number.
- **Bytes**: the UTF-8 bytes of the pieces in one flat row, each byte's GPT-2 symbol and initial token id.
- **BPE**: merge rounds, one block per round. In every round each piece merges its lowest-ranked adjacent
  pair everywhere it occurs (left to right, no overlaps) -- exactly Hugging Face's order, so the pieces
  finish after at most (bytes - 1) rounds. Merged-away slots become "". Pairs are looked up numerically
  (key = left id * V + right id) since spreadsheet text comparison ignores case.
- **Merges**: the merge table sorted by pair key; **Byte symbols**: GPT-2's byte -> symbol -> id table;
  **Unicode classes**: code-point ranges and their class (the classes Hugging Face's regex engine uses);
  **Token texts**: each id's text, for the Prompt tab's "token text" row.

Sizes: the default Capacity (256 characters, 512 bytes, 100 rounds: any piece of up to 101 bytes finishes)
is ~268k formula cells, ~262k of them the BPE rounds (5 rows of `bytes` cells per round), plus GPT-2's
tables (~410k constants); LibreOffice recalculates it in ~8 s. The `formulas` engine needs books sized to
their text (capacity_for): GPT-2's 50,000-merge table alone costs it ~30 s and ~1.2 GB.

Entry points: tokenizer_tabs (tabs + names, to put in any book), write_tokenizer_book, capacity_for,
evaluate_tokens / evaluate_books (recalculate with LibreOffice or formulas and read what the sheet shows),
tokenize_with_sheets (many texts: batch books, one LibreOffice run).
"""
import bisect
import json
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import XlgptError
from ..check.engines import soffice_csv
from ..layout import Rect as Region
from ..xlsx.writer import (BOLD, INPUT, TITLE, Cells, Formula, Sheet, cell_name, column_letter,
                   quote_sheet, write_workbook)

FIRST = 3  # first data column (C): A holds row labels, B small notes, as on the model's tabs
LETTER, NUMBER, OTHER, SPACE, CONTRACTION = 1, 2, 3, 4, 5
CLASS_NAMES = {LETTER: "letter", NUMBER: "number", OTHER: "other", SPACE: "whitespace"}
HIGH, LOW, PAIR_BASE = (55296, 56319), (56320, 57343), 65536  # UTF-16 surrogates (Excel's MID/UNICODE)
TOKEN_TEXTS = "Token texts"
CONTRACTIONS = (("s", "t", "m", "d"), ("re", "ve", "ll"))  # after "'", case-sensitive as in GPT-2's regex


@dataclass(frozen=True)
class Capacity:
    """How much text a sheet can tokenize: characters (UTF-16 units in Excel, code points elsewhere),
    UTF-8 bytes, merge rounds (a piece of n bytes needs at most n - 1) and token cells (default: bytes)."""
    chars: int = 256
    bytes: int = 512
    rounds: int = 100
    tokens: int = 0

    def __post_init__(self):
        for f in ("chars", "bytes", "rounds"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise XlgptError(f"tokenizer capacity: {f} must be a positive integer")
        if not self.tokens:
            object.__setattr__(self, "tokens", self.bytes)

    def at_least(self, other):
        """This capacity, enlarged where `other` needs more characters, bytes or rounds."""
        return Capacity(*(max(getattr(self, f), getattr(other, f)) for f in ("chars", "bytes", "rounds")))


# --- the tokenizer's tables --------------------------------------------------------------------------


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map (byte-level BPE's alphabet)."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@dataclass
class Tables:
    vocab: dict       # symbol string -> id
    V: int            # pair key = left * V + right
    merges: dict      # pair key -> (rank, merged id, "left right" as in merges.txt)
    byte_ids: list    # byte -> initial token id, or None when the vocabulary lacks that byte

    def rank(self, left, right):
        return self.merges.get(left * self.V + right)


@lru_cache(maxsize=4)
def _tables(vocab_file, merges_file):
    vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
    V = max(vocab.values()) + 1
    merges = {}
    lines = Path(merges_file).read_text(encoding="utf-8").split("\n")
    rank = 0
    for line in lines:
        if line.startswith("#version") or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab or parts[0] + parts[1] not in vocab:
            raise XlgptError(f"{merges_file}: bad merge line {line!r}")
        # like Hugging Face (a map built in file order), a repeated pair keeps its last rank
        merges[vocab[parts[0]] * V + vocab[parts[1]]] = (rank, vocab[parts[0] + parts[1]], line)
        rank += 1
    sym = bytes_to_unicode()
    return Tables(vocab, V, merges, [vocab.get(sym[b]) for b in range(256)])


def tables(tok):
    return _tables(str(tok.files[0]), str(tok.files[1]))


def class_runs():
    """[(first code point, class)] for the whole code space, sorted: GPT-2's letter/number/other/whitespace
    classes as Hugging Face `tokenizers` (Oniguruma, a newer Unicode than Python's) applies them."""
    out, cp = [], 0
    for item in "".join(_CLASS_RUNS).split():
        out.append((cp, int(item[0])))
        cp += int(item[1:], 36)
    assert cp == 0x110000
    return out


@lru_cache(maxsize=1)
def _class_starts():
    return class_runs()


def char_class(cp):
    """GPT-2's class of a code point: LETTER, NUMBER, OTHER or SPACE (the Unicode classes tab's lookup)."""
    runs = _class_starts()
    return runs[bisect.bisect_right(runs, (cp, 9)) - 1][1]


# --- a Python mirror of the sheet's algorithm (to size capacities; tests compare with Hugging Face) ---


def pieces(text):
    """GPT-2's pre-tokenization, as the Chars tab computes it (the same state machine)."""
    k = [char_class(ord(c)) for c in text] + [None]
    out, kind, left = [], None, 0
    for i, c in enumerate(text):
        if i == 0:
            cont = False
        elif kind == CONTRACTION:
            cont = left > 0
        elif kind in (LETTER, NUMBER, OTHER):
            cont = k[i] == kind
        else:
            cont = k[i] == SPACE and k[i + 1] in (None, SPACE)
        if cont:
            left -= 1
            out[-1] += c
            continue
        n = 2 if c == "'" and text[i + 1:i + 2] in CONTRACTIONS[0] else \
            3 if c == "'" and text[i + 1:i + 3] in CONTRACTIONS[1] else 0
        if n:
            kind, left = CONTRACTION, n - 1
        elif c == " " and k[i + 1] in (LETTER, NUMBER, OTHER):
            kind = k[i + 1]
        else:
            kind = min(k[i], SPACE)
        out.append(c)
    return out


def bpe_rounds(tab, ids):
    """Merge one piece like the BPE tab: each round merges every occurrence of the lowest-ranked pair.
    Returns (final ids, rounds used)."""
    rounds = 0
    while True:
        found = [tab.rank(a, b) for a, b in zip(ids, ids[1:])]
        best = min((f[0] for f in found if f), default=None)
        if best is None:
            return ids, rounds
        out, j = [], 0
        while j < len(ids):
            if j + 1 < len(ids) and found[j] and found[j][0] == best:
                out.append(found[j][1])
                j += 2
            else:
                out.append(ids[j])
                j += 1
        ids, rounds = out, rounds + 1


def utf16_len(text):
    return len(text.encode("utf-16-le")) // 2


def needs(tok, text):
    """(UTF-16 length, UTF-8 bytes, merge rounds, tokens) the sheet needs for `text`."""
    tab = tables(tok)
    rounds = tokens = 0
    for piece in pieces(text):
        ids = [tab.byte_ids[b] for b in piece.encode("utf-8")]
        if None in ids:
            raise XlgptError(f"the tokenizer cannot encode {text!r} (its vocabulary lacks some bytes)")
        ids, r = bpe_rounds(tab, ids)
        rounds, tokens = max(rounds, r), tokens + len(ids)
    return utf16_len(text), len(text.encode("utf-8")), rounds, tokens


def capacity_for(texts, tok):
    """The smallest capacity that tokenizes every text (Excel's UTF-16 length counts as characters)."""
    if isinstance(texts, str):
        texts = [texts]
    n = [needs(tok, t) for t in texts]
    return Capacity(max([1] + [x[0] for x in n]), max([1] + [x[1] for x in n]),
                    max([1] + [x[2] for x in n]), max([1] + [x[3] for x in n]))


# --- sheet building ----------------------------------------------------------------------------------


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


class _Tab:
    """A tab with labelled rows (A: label, B: note) over `width` data columns from C."""

    def __init__(self, name, title, width, index_label):
        self.name, self.width = name, width
        self.sheet = Sheet(name, widths={1: 44, 2: 9})
        self.sheet.add(Cells(1, 1, [[title]], style=TITLE))
        self.sheet.add(Cells(2, 1, [[index_label, None] + list(range(1, width + 1))], style=BOLD))
        self.next = 3

    def col(self, j):
        """Column letter of data column j (1-based)."""
        return column_letter(FIRST + j - 1)

    def add_row(self, label, formula, note=None, first=None, last=None, style=0):
        """A row of one formula per column: formula(j) for j = 1..width (first/last override the ends)."""
        r = self.next
        self.next += 1
        cells = []
        for j in range(1, self.width + 1):
            f = first(j) if first and j == 1 else last(j) if last and j == self.width else formula(j)
            cells.append(f if f is None or isinstance(f, (int, float)) else Formula(f))
        self.sheet.add(Cells(r, 1, [[label, note]], style=BOLD if style else 0))
        self.sheet.add(Cells(r, FIRST, [cells], style=style))
        return r

    def title(self, text):
        self.sheet.add(Cells(self.next, 1, [[text]], style=BOLD))
        self.next += 1

    def skip(self, n=1):
        self.next += n

    def region(self, r):
        return Region(self.name, r, FIRST, 1, self.width)

    def ref(self, r, from_sheet):
        return self.region(r).ref(from_sheet)


def _exact_any(text_ref, options):
    return "OR(" + ",".join(f'EXACT({text_ref},"{o}")' for o in options) + ")"


class Builder:
    """Lays out one prompt's tabs (Chars, Bytes, BPE) and its rows on a prompt tab."""

    def __init__(self, tok, cap, suffix="", vocabulary=None):
        self.tok, self.cap, self.tab = tok, cap, tables(tok)
        # token texts: the Token texts tab, read by reference rather than through a defined name so that
        # `formulas` (which loads every defined name) skips it when only the ids are wanted
        self.suffix = suffix
        self.vocabulary = vocabulary or Region(TOKEN_TEXTS, 3, 2, self.tab.V, 1).ref()

    # Prompt block: text, status, count, ids (rows top .. top+4)
    def prompt_block(self, sheet, top, text):
        cap = self.cap
        self.prompt = Region(sheet.name, top, FIRST)
        self.status = Region(sheet.name, top + 1, FIRST)
        self.count = Region(sheet.name, top + 2, FIRST)
        self.ids = Region(sheet.name, top + 4, FIRST, 1, cap.tokens)
        sheet.add(Cells(top, 1, [["Prompt (type your text here)"]], style=BOLD))
        sheet.add(Cells(top, FIRST, [[prompt_value(text)]], style=INPUT))
        sheet.add(Cells(top + 1, 1, [["Status"]], style=BOLD))
        sheet.add(Cells(top + 2, 1, [["Number of tokens"]], style=BOLD))
        sheet.add(Cells(top + 3, 1, [["token position", None] + list(range(1, cap.tokens + 1))], style=BOLD))
        sheet.add(Cells(top + 4, 1, [["token id"]], style=BOLD))
        sheet.add(Cells(top + 5, 1, [["token text"]], style=BOLD))
        self.texts = Region(sheet.name, top + 5, FIRST, 1, cap.tokens)
        sheet.add(Cells(top + 6, 1, [[f"Capacity: {cap.chars} characters, {cap.bytes} UTF-8 bytes, "
                                      f"{cap.rounds} merge rounds, {cap.tokens} tokens"]]))
        return top + 8

    def build(self, prompt_sheet):
        """Fill the Chars, Bytes and BPE tabs and the formulas of the prompt block; returns the tabs."""
        cap, s = self.cap, self.suffix
        chars = _Tab("Chars" + s, "Characters: code points, classes and GPT-2's pre-tokenization into pieces",
                     cap.chars, "character position")
        byts = _Tab("Bytes" + s, "UTF-8 bytes of the pieces, GPT-2's byte symbols and initial token ids",
                    cap.bytes, "byte slot")
        bpe = _Tab("BPE" + s, "Byte-pair merges: each round, each piece merges its lowest-ranked pair",
                   cap.bytes, "byte slot")
        P = self.prompt.ref(chars.name)
        c = chars.col
        N = cap.chars

        # ---- Chars ----
        r_char = chars.add_row("character", lambda j: f"MID({P},{j},1)")
        r_unit = chars.add_row("code (UNICODE)", lambda j: f'IF({c(j)}{r_char}="","",_xlfn.UNICODE({c(j)}{r_char}))',
                               "Excel: UTF-16 unit")
        u = lambda j: f"{c(j)}{r_unit}"

        def code_point(j):
            hi = f"AND({u(j)}>={HIGH[0]},{u(j)}<={HIGH[1]},ISNUMBER({u(j + 1)}))"
            lo_next = f"AND({u(j + 1)}>={LOW[0]},{u(j + 1)}<={LOW[1]})"
            joined = f"({u(j)}-{HIGH[0]})*1024+{u(j + 1)}-{LOW[0]}+{PAIR_BASE}"
            return f'IF(ISNUMBER({u(j)}),IF({hi},IF({lo_next},{joined},{u(j)}),{u(j)}),"")'
        r_cp = chars.add_row("code point (surrogate pairs joined)", code_point, last=lambda j: f"{u(j)}")
        cp = lambda j: f"{c(j)}{r_cp}"

        def utf8_len(j):
            size = f"IF({cp(j)}<128,1,IF({cp(j)}<2048,2,IF({cp(j)}<65536,3,4)))"
            if j == 1:
                return f"IF(ISNUMBER({cp(j)}),{size},0)"
            # the second half of a joined surrogate pair has no bytes of its own
            low = f"AND({u(j)}>={LOW[0]},{u(j)}<={LOW[1]},ISNUMBER({cp(j - 1)}))"
            return f"IF(ISNUMBER({cp(j)}),IF({low},IF({cp(j - 1)}>={PAIR_BASE},0,{size}),{size}),0)"
        r_len = chars.add_row("UTF-8 bytes", utf8_len)
        r_class = chars.add_row("class (1 letter, 2 number, 3 other, 4 whitespace)",
                                lambda j: f'IF(ISNUMBER({cp(j)}),VLOOKUP({cp(j)},ClassTable,2,TRUE),"")')
        k = lambda j: f"{c(j)}{r_class}"
        ch = lambda j: f"{c(j)}{r_char}"

        def contraction(j):
            two = _exact_any(f"MID({P},{j + 1},1)", CONTRACTIONS[0])
            three = _exact_any(f"MID({P},{j + 1},2)", CONTRACTIONS[1])
            return f"IF(EXACT({ch(j)},\"'\"),IF({two},2,IF({three},3,0)),0)"
        r_con = chars.add_row("contraction length ('s 't 'm 'd: 2, 're 've 'll: 3)", contraction)
        # rows filled below refer to each other: reserve their numbers first
        r_start, r_kind, r_left, r_piece = r_con + 1, r_con + 2, r_con + 3, r_con + 4

        def starts(j):
            if j == 1:
                return f'{ch(j)}<>""'
            prev_kind, prev_left = f"{c(j - 1)}{r_kind}", f"{c(j - 1)}{r_left}"
            space_run = f'AND({k(j)}={SPACE},OR({k(j + 1)}="",{k(j + 1)}={SPACE}))'
            cont = f"CHOOSE({prev_kind},{k(j)}={LETTER},{k(j)}={NUMBER},{k(j)}={OTHER},{space_run},{prev_left}>0)"
            return f'IF({ch(j)}="",FALSE,IF({c(j)}{r_len}=0,FALSE,NOT({cont})))'
        chars.add_row("starts a new piece", starts)

        def kind(j):
            nxt = k(j + 1)
            new = (f'IF({c(j)}{r_con}>0,{CONTRACTION},IF(AND(EXACT({ch(j)}," "),ISNUMBER({nxt})),'
                   f'IF({nxt}<{SPACE},{nxt},{SPACE}),IF({k(j)}<{SPACE},{k(j)},{SPACE})))')
            if j == 1:
                return f'IF({ch(j)}="","",{new})'
            return f'IF({ch(j)}="","",IF({c(j)}{r_start},{new},{c(j - 1)}{r_kind}))'
        chars.add_row("piece kind (1 letters, 2 numbers, 3 other, 4 spaces, 5 contraction)", kind)

        def left(j):
            new = f"IF({c(j)}{r_con}>0,{c(j)}{r_con}-1,0)"
            if j == 1:
                return f'IF({ch(j)}="","",{new})'
            return f'IF({ch(j)}="","",IF({c(j)}{r_start},{new},MAX({c(j - 1)}{r_left}-1,0)))'
        chars.add_row("contraction characters still to come", left)

        def piece(j):
            if j == 1:
                return f'IF({ch(j)}="","",1)'
            return f'IF({ch(j)}="","",{c(j - 1)}{r_piece}+IF({c(j)}{r_start},1,0))'
        chars.add_row("piece number", piece)
        r_first = chars.next
        chars.add_row("first byte", lambda j: f"{c(j - 1)}{r_first}+{c(j - 1)}{r_len}", first=lambda j: 1)
        r_key = chars.add_row("byte lookup key (increasing)",
                              lambda j: f'IF({ch(j)}="",{c(j)}{r_first}+{j},IF({c(j)}{r_len}=0,{c(j)}{r_first}-0.5,'
                                        f'{c(j)}{r_first}))')
        total_bytes = f"SUM({chars.ref(r_len, None)})"

        # ---- Bytes ----
        b = byts.col
        C = lambda r: chars.ref(r, byts.name)
        r_bc = byts.add_row("character position",
                            lambda j: f'IF({j}>{total_bytes},"",MATCH({j},{C(r_key)},1))')
        ci = lambda j: f"{b(j)}{r_bc}"
        at = lambda j, r: f'IF(ISNUMBER({ci(j)}),INDEX({C(r)},{ci(j)}),"")'
        byts.add_row("character", lambda j: at(j, r_char))
        r_bw = byts.add_row("piece number", lambda j: f"IF(ISNUMBER({ci(j)}),INDEX({C(r_piece)},{ci(j)}),0)")
        r_bcp = byts.add_row("code point", lambda j: at(j, r_cp))
        r_bn = byts.add_row("UTF-8 length", lambda j: at(j, r_len))
        r_bt = byts.add_row("byte of the character (0 = lead)",
                            lambda j: f'IF(ISNUMBER({ci(j)}),{j}-INDEX({C(r_first)},{ci(j)}),"")')

        def byte_value(j):
            n, t, x = f"{b(j)}{r_bn}", f"{b(j)}{r_bt}", f"{b(j)}{r_bcp}"
            return (f'IF(ISNUMBER({ci(j)}),IF({t}=0,CHOOSE({n},0,192,224,240)+INT({x}/64^({n}-1)),'
                    f'128+MOD(INT({x}/64^({n}-1-{t})),64)),"")')
        r_byte = byts.add_row("UTF-8 byte", byte_value)
        byts.add_row("GPT-2 byte symbol",
                     lambda j: f'IF(ISNUMBER({b(j)}{r_byte}),VLOOKUP({b(j)}{r_byte},ByteTable,2,TRUE),"")')
        r_bid = byts.add_row("initial token id",
                             lambda j: f'IF(ISNUMBER({b(j)}{r_byte}),VLOOKUP({b(j)}{r_byte},ByteTable,3,TRUE),"")')
        r_bend = byts.next
        byts.add_row("last byte slot of the piece",
                     lambda j: f'IF({b(j + 1)}{r_bw}={b(j)}{r_bw},{b(j + 1)}{r_bend},{j})', last=lambda j: f"{j}")

        # ---- BPE ----
        x = bpe.col
        V = self.tab.V
        bpe.sheet.add(Cells(3, 1, [["piece number"]], style=BOLD))
        bpe.sheet.add(Cells(3, FIRST, [[Formula(f"{quote_sheet(byts.name)}!{b(j)}{r_bw}")
                                        for j in range(1, cap.bytes + 1)]], style=BOLD))
        bpe.sheet.add(Cells(4, 1, [["last slot of the piece"]], style=BOLD))
        bpe.sheet.add(Cells(4, FIRST, [[Formula(f"{quote_sheet(byts.name)}!{b(j)}{r_bend}")
                                        for j in range(1, cap.bytes + 1)]], style=BOLD))
        bpe.sheet.freeze = (5, FIRST)
        chars.sheet.freeze = (3, FIRST)
        byts.sheet.freeze = (3, FIRST)
        bpe.next = 6
        start = lambda j: "TRUE" if j == 1 else f"{x(j)}$3<>{x(j - 1)}$3"
        frow = lambda r: bpe.region(r).ref(bpe.name)

        def block(ids_formula, label, last_round=False):
            r_id = bpe.next
            bpe.add_row(label, ids_formula, note=Formula(f"COUNT({frow(r_id)})"))
            r_rn, r_rk = r_id + 1, r_id + 2
            bpe.add_row("right neighbour in the piece",
                        lambda j: f'IF({x(j + 1)}$3<>{x(j)}$3,"",IF(ISNUMBER({x(j + 1)}{r_id}),{x(j + 1)}{r_id},'
                                  f'{x(j + 1)}{r_rn}))', last=lambda j: '""')

            def rank(j):
                key = f"{x(j)}{r_id}*{V}+{x(j)}{r_rn}"
                return (f'IF(AND(ISNUMBER({x(j)}{r_id}),ISNUMBER({x(j)}{r_rn})),'
                        f'IF(VLOOKUP({key},MergeTable,1,TRUE)={key},VLOOKUP({key},MergeTable,2,TRUE),""),"")')
            bpe.add_row("rank of the pair (token, right neighbour)", rank)
            if last_round:
                return r_id, r_rn, r_rk, None
            r_min, r_m = r_id + 3, r_id + 4
            rk = lambda j: f"{x(j)}{r_rk}"

            def running_min(j):
                if j == 1:
                    return rk(j)
                prev = f"{x(j - 1)}{r_min}"
                return (f'IF({start(j)},{rk(j)},IF(ISNUMBER({rk(j)}),IF(ISNUMBER({prev}),MIN({prev},{rk(j)}),{rk(j)}),'
                        f'{prev}))')
            bpe.add_row("lowest rank so far in the piece", running_min)

            def merges(j):
                lowest = f"INDEX({frow(r_min)},{x(j)}$4)"
                free = "TRUE" if j == 1 else f"OR({start(j)},NOT({x(j - 1)}{r_m}))"
                here = f"IF(ISNUMBER({rk(j)}),AND({rk(j)}={lowest},{free}),FALSE)"
                return here if j == 1 else f"IF(ISNUMBER({x(j)}{r_id}),{here},{x(j - 1)}{r_m})"
            bpe.add_row("merges with its right neighbour (carried over empty slots)", merges)
            bpe.skip()
            return r_id, r_rn, r_rk, r_m

        def next_ids(r_id, r_rn, r_m):
            def f(j):
                merged = f"VLOOKUP({x(j)}{r_id}*{V}+{x(j)}{r_rn},MergeTable,3,TRUE)"
                consumed = "" if j == 1 else f'IF(AND(NOT({start(j)}),{x(j - 1)}{r_m}),"",{x(j)}{r_id})'
                keep = f"{x(j)}{r_id}" if j == 1 else consumed
                return f'IF(ISNUMBER({x(j)}{r_id}),IF({x(j)}{r_m},{merged},{keep}),"")'
            return f

        B = quote_sheet(byts.name)
        bpe.title("Round 1")
        prev = block(lambda j: f"{B}!{b(j)}{r_bid}", "tokens before round 1")
        for rnd in range(2, cap.rounds + 1):
            bpe.title(f"Round {rnd}")
            prev = block(next_ids(prev[0], prev[1], prev[3]), f"tokens before round {rnd}")
        bpe.title(f"After {cap.rounds} rounds")
        r_final, _, r_check, _ = block(next_ids(prev[0], prev[1], prev[3]), f"tokens after round {cap.rounds}",
                                       last_round=True)
        r_count = bpe.next
        bpe.add_row("token number",
                    lambda j: f"IF(ISNUMBER({x(j)}{r_final}),{x(j - 1)}{r_count}+1,{x(j - 1)}{r_count})",
                    first=lambda j: f"IF(ISNUMBER({x(j)}{r_final}),1,0)")

        # ---- status, count and ids on the prompt tab ----
        ps = prompt_sheet
        Pp = self.prompt.ref(ps.name)
        n_bytes = f"SUM({chars.ref(r_len, ps.name)})"
        n_tokens = f"COUNT({bpe.ref(r_final, ps.name)})"
        status = (f'IF(LEN({Pp})>{N},"Too long: "&LEN({Pp})&" characters; this sheet holds at most {N}.",'
                  f'IF({n_bytes}>{cap.bytes},"Too long: "&{n_bytes}&" UTF-8 bytes; this sheet holds at most '
                  f'{cap.bytes}.",'
                  f'IF(COUNT({byts.ref(r_bid, ps.name)})<{n_bytes},'
                  f'"The tokenizer has no token for some bytes of this text.",'
                  f'IF(COUNT({bpe.ref(r_check, ps.name)})>0,"Not finished: merges still apply after '
                  f'{cap.rounds} rounds (a piece is too long for this sheet).",'
                  f'IF({n_tokens}>{cap.tokens},"Too many tokens: "&{n_tokens}&"; this sheet holds at most '
                  f'{cap.tokens}.","ok")))))')
        ok = f'{self.status.ref(ps.name)}="ok"'
        ps.add(Cells(self.status.top, FIRST, [[Formula(status)]], style=BOLD))
        ps.add(Cells(self.count.top, FIRST, [[Formula(f'IF({ok},COUNT({bpe.ref(r_final, ps.name)}),"")')]], style=BOLD))
        ids = bpe.ref(r_final, ps.name)
        count = self.count.ref(ps.name)
        ps.add(Cells(self.ids.top, FIRST, [[Formula(
            f'IF({ok},IF({t}>{count},"",INDEX({ids},MATCH({t},{bpe.ref(r_count, ps.name)},0))),"")')
            for t in range(1, cap.tokens + 1)]], style=BOLD))
        id_cell = lambda t: cell_name(self.ids.top, FIRST + t)
        ps.add(Cells(self.texts.top, FIRST, [[Formula(
            f'IF(ISNUMBER({id_cell(t)}),INDEX({self.vocabulary},{id_cell(t)}+1),"")') for t in range(cap.tokens)]]))
        return [chars.sheet, byts.sheet, bpe.sheet]


def token_texts(tok):
    r"""Each token's text (partial UTF-8 characters show as \ufffd), made readable like the model's labels."""
    from .hf import display
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    out = [""] * tables(tok).V
    for symbol, i in tables(tok).vocab.items():
        out[i] = display(bytes(to_byte.get(c, 63) for c in symbol).decode("utf-8", errors="replace"))
    return out


def table_tabs(tok, vocabulary=True):
    """The shared tables: Merges (sorted by pair key), Byte symbols, Unicode classes and, unless the book
    already has its vocabulary's texts, Token texts; and their defined names."""
    tab = tables(tok)
    sym = bytes_to_unicode()
    merges = Sheet("Merges", widths={1: 14, 2: 9, 3: 9, 4: 9, 5: 10, 6: 24}, freeze=(4, 1))
    merges.add(Cells(1, 1, [[f"Merge table, sorted by pair key = left id * {tab.V} + right id "
                             f"(rank: line in the merges file, lower merges first)"]], style=TITLE))
    merges.add(Cells(2, 1, [["pair key", "rank", "merged id", "left id", "right id", "merge (as in the merges file)"]],
                     style=BOLD))
    rows = [[-1, "none", "none", None, None, "(sentinel: no pair has a smaller key)"]]
    for key in sorted(tab.merges):
        rank, merged, line = tab.merges[key]
        rows.append([key, rank, merged, key // tab.V, key % tab.V, line])
    merges.add(Cells(3, 1, rows))
    names = {"MergeTable": Region("Merges", 3, 1, len(rows), 3)}

    bsheet = Sheet("Byte symbols", widths={1: 8, 2: 10, 3: 10}, freeze=(3, 1))
    bsheet.add(Cells(1, 1, [["GPT-2's byte-level alphabet: each byte's symbol and its token id"]], style=TITLE))
    bsheet.add(Cells(2, 1, [["byte", "symbol", "token id"]], style=BOLD))
    bsheet.add(Cells(3, 1, [[v, sym[v], "none" if tab.byte_ids[v] is None else tab.byte_ids[v]] for v in range(256)]))
    names["ByteTable"] = Region("Byte symbols", 3, 1, 256, 3)

    runs = class_runs()
    csheet = Sheet("Unicode classes", widths={1: 14, 2: 14, 3: 8, 4: 12}, freeze=(3, 1))
    csheet.add(Cells(1, 1, [["Character classes of GPT-2's regex, by code-point range (as Hugging Face tokenizers "
                             "applies them)"]], style=TITLE))
    csheet.add(Cells(2, 1, [["first code point", "class", "last code point", "class name"]], style=BOLD))
    ends = [s for s, _ in runs[1:]] + [0x110000]
    csheet.add(Cells(3, 1, [[s, k, e - 1, CLASS_NAMES[k]] for (s, k), e in zip(runs, ends)]))
    names["ClassTable"] = Region("Unicode classes", 3, 1, len(runs), 2)
    sheets = [merges, bsheet, csheet]
    if vocabulary:
        vsheet = Sheet(TOKEN_TEXTS, widths={1: 8, 2: 24}, freeze=(3, 1))
        vsheet.add(Cells(1, 1, [["Each token's text (␣ space, ↵ newline, ⇥ tab)"]], style=TITLE))
        vsheet.add(Cells(2, 1, [["token id", "text"]], style=BOLD))
        vsheet.add(Cells(3, 1, [[i, t] for i, t in enumerate(token_texts(tok))]))
        sheets.append(vsheet)
    return sheets, names


def tokenizer_tabs(tok, capacity=None, text="", vocabulary=None):
    """The tokenizer's tabs for one prompt, in order (Prompt, Chars, Bytes, BPE, Merges, Byte symbols,
    Unicode classes, Token texts), and their defined names {name: Region}.

    `vocabulary`: the name (or reference) of a column of token texts the book already has, e.g. the model
    book's "Vocabulary"; then no Token texts tab is added."""
    cap = capacity or Capacity()
    prompt = Sheet("Prompt", widths={1: 30, 2: 4, 3: 60})
    prompt.add(Cells(1, 1, [["GPT-2's tokenizer in formulas: type text into the yellow cell C3"]], style=TITLE))
    builder = Builder(tok, cap, vocabulary=vocabulary)
    builder.prompt_block(prompt, 3, text)
    sheets = [prompt] + builder.build(prompt)
    tabs, names = table_tabs(tok, vocabulary is None)
    names.update(Prompt=builder.prompt, TokenizerStatus=builder.status, SheetTokenCount=builder.count,
                 SheetTokenIds=builder.ids)
    return sheets + tabs, names


def batch_tabs(tok, texts, capacities=None):
    """Several prompts in one book (to check many texts with one engine run): a Prompts tab with one block
    per text, each text's own Chars/Bytes/BPE tabs ("Chars 1", ...) and the shared tables. Defined names
    are numbered: Prompt_1, TokenizerStatus_1, SheetTokenCount_1, SheetTokenIds_1, ...
    Returns (sheets, names, builders)."""
    caps = capacities or [capacity_for([t], tok) for t in texts]
    prompts = Sheet("Prompts", widths={1: 30, 2: 4, 3: 40})
    prompts.add(Cells(1, 1, [["Tokenizer batch: one block per prompt"]], style=TITLE))
    sheets, names, top, blocks = [prompts], {}, 3, []
    for i, (text, cap) in enumerate(zip(texts, caps), 1):
        builder = Builder(tok, cap, f" {i}")
        top = builder.prompt_block(prompts, top, text)
        sheets += builder.build(prompts)
        blocks.append(builder)
    tabs, names = table_tabs(tok)
    for i, b in enumerate(blocks, 1):
        names.update({f"Prompt_{i}": b.prompt, f"TokenizerStatus_{i}": b.status, f"SheetTokenCount_{i}": b.count,
                      f"SheetTokenIds_{i}": b.ids})
    return sheets + tabs, names, blocks


def write_tokenizer_book(path, tok, text, capacity=None):
    """A tokenizer-only workbook. For one text: the Prompt tab and the others (tokenizer_tabs); without a
    capacity, the default one, enlarged if the text needs more (capacity_for([text], tok) gives the smallest
    book, e.g. for the `formulas` engine). For a list of texts: one batch book (batch_tabs), each text with
    its own tabs sized by `capacity` or, without one, to the text."""
    if not isinstance(text, str):
        caps = None if capacity is None else [capacity] * len(text)
        write_batch_book(path, tok, list(text), caps)
        return path
    if capacity is None:
        capacity = Capacity().at_least(capacity_for([text], tok))
    sheets, names = tokenizer_tabs(tok, capacity, text)
    write_workbook(path, sheets, names)
    return path


# --- evaluation --------------------------------------------------------------------------------------


@dataclass
class SheetResult:
    """What a recalculated sheet shows for one prompt."""
    status: str
    count: object   # an int when the status is "ok", else ""
    ids: list       # the token ids shown, up to the first empty cell

    @property
    def ok(self):
        return self.status == "ok"


@dataclass(frozen=True)
class Block:
    """Where one prompt's results sit: status, count and the row of token-id cells (same sheet)."""
    status: Region
    count: Region
    ids: Region


def write_batch_book(path, tok, texts, capacities=None):
    """Many prompts in one book (see batch_tabs); returns the Block of each text, in order."""
    sheets, names, builders = batch_tabs(tok, texts, capacities)
    write_workbook(path, sheets, names)
    return [Block(b.status, b.count, b.ids) for b in builders]


def book_blocks(path):
    """The Blocks of a tokenizer book, from its defined names (one for a single-prompt book, else one per
    numbered prompt of a batch book)."""
    import openpyxl
    from ..contract import parse_ref
    try:
        wb = openpyxl.load_workbook(path, read_only=True)
    except Exception as e:
        raise XlgptError(f"{path}: not an .xlsx workbook ({e})")
    try:
        refs = {n: parse_ref(d.attr_text) for n, d in wb.defined_names.items()}
    finally:
        wb.close()
    region = lambda r: Region(r.sheet, r.top, r.left, r.bottom - r.top + 1, r.right - r.left + 1)
    numbered = [n[len("SheetTokenIds"):] for n in refs if re.fullmatch(r"SheetTokenIds_\d+", n)]
    keys = [""] if "SheetTokenIds" in refs else sorted(numbered, key=lambda k: int(k[1:]))
    blocks = []
    for k in keys or [""]:
        missing = [n + k for n in ("TokenizerStatus", "SheetTokenCount", "SheetTokenIds") if not refs.get(n + k)]
        if missing:
            raise XlgptError(f"{path}: not a tokenizer workbook (no defined name {missing[0]})")
        blocks.append(Block(*(region(refs[n + k]) for n in ("TokenizerStatus", "SheetTokenCount", "SheetTokenIds"))))
    return blocks


def _result(get, block):
    status = get(block.status.top, block.status.left)
    count = get(block.count.top, block.count.left)
    ids = []
    for j in range(block.ids.width):
        v = get(block.ids.top, block.ids.left + j)
        if v in (None, ""):
            break
        try:
            ids.append(int(float(v)))
        except (TypeError, ValueError):
            ids.append(str(v))  # an error value: shown as such, never as a token id
    try:
        count = int(float(count))
    except (TypeError, ValueError):
        pass
    return SheetResult("" if status is None else str(status), count, ids)


def _grid_getter(grid):
    def get(r, c):
        return grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None
    return get


def _formulas_getter(path, blocks):
    """Recalculate with the `formulas` package, loading only the cells the results depend on (from_ranges:
    the Merges tab's display columns are skipped), and return a cell getter."""
    import contextlib
    import io
    import numpy as np
    path = Path(path).resolve()
    refs = [f"'[{path}]{r.sheet.upper()}'!{r.ref(r.sheet, absolute=False)}"
            for b in blocks for r in (b.status, b.count, b.ids)]
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars
        import formulas
        solution = formulas.ExcelModel().from_ranges(*refs).finish().calculate()
    values = {k.upper(): v for k, v in solution.items()}
    name = path.name.upper()

    def get(sheet, r, c):
        v = values.get(f"'[{name}]{sheet.upper()}'!{cell_name(r, c)}")
        if v is None:
            return None
        v = np.asarray(v.value, dtype=object).ravel()[0]
        if isinstance(v, str) or v is None:
            return v
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v)).upper()
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)  # an XlError such as #VALUE!
    return get


def evaluate_books(books, engine="libreoffice", timeout=3600):
    """Recalculate books with `engine` ("libreoffice" or "formulas") and read what they show.

    `books` is a list of paths (single-prompt books) or (path, [Block]) pairs (batch books); returns one
    list of SheetResult per book. LibreOffice converts all books in a single run."""
    books = [(b, None) if isinstance(b, (str, Path)) else b for b in books]
    books = [(Path(p), blocks or book_blocks(p)) for p, blocks in books]
    out = []
    if engine == "libreoffice":
        for (path, blocks) in books:
            if len({b.status.sheet for b in blocks} | {b.ids.sheet for b in blocks}) != 1:
                raise XlgptError(f"{path}: the results must sit on one sheet")
        indexes = {_sheet_index(p, blocks[0].status.sheet) for p, blocks in books}
        for index in sorted(indexes):
            group = [(p, bl) for p, bl in books if _sheet_index(p, bl[0].status.sheet) == index]
            grids = soffice_csv([p for p, _ in group], index, timeout)
            for (p, blocks), grid in zip(group, grids):
                get = _grid_getter(grid)
                out.append((p, [_result(get, b) for b in blocks]))
        order = {p: i for i, (p, _) in enumerate(books)}
        return [r for _, r in sorted(out, key=lambda x: order[x[0]])]
    if engine == "formulas":
        for path, blocks in books:
            get = _formulas_getter(path, blocks)
            out.append([_result(lambda r, c, s=b.status.sheet: get(s, r, c), b) for b in blocks])
        return out
    raise XlgptError(f"unknown engine {engine!r} (libreoffice or formulas)")


def _sheet_index(path, sheet, _cache={}):
    key = (str(path), Path(path).stat().st_mtime_ns)
    if key not in _cache:
        import openpyxl
        wb = openpyxl.load_workbook(path, read_only=True)
        _cache[key] = wb.sheetnames
        wb.close()
    return _cache[key].index(sheet) + 1


def evaluate_tokens(path, engine="libreoffice", timeout=3600):
    """The token ids a single-prompt book computes with `engine`; XlgptError with the sheet's own
    message when its status is not "ok"."""
    result = evaluate_books([path], engine, timeout)[0][0]
    if not result.ok:
        raise XlgptError(f"{Path(path).name}: the sheet says: {result.status}")
    return result.ids


def tokenize_with_sheets(tok, texts, engine="libreoffice", directory=None, per_book=40):
    """Tokenize many texts with the sheet itself (capacity sized to each text): batch books of
    `per_book` prompts, recalculated by `engine` (one LibreOffice run for all of them).
    Returns one SheetResult per text."""
    texts = list(texts)
    with tempfile.TemporaryDirectory(prefix="xlgpt-tok-") as tmp:
        directory = Path(directory or tmp)
        books = []
        for i in range(0, len(texts), per_book):
            path = directory / f"tokenizer-batch-{i // per_book}.xlsx"
            books.append((path, write_batch_book(path, tok, texts[i:i + per_book])))
        return [r for rs in evaluate_books(books, engine) for r in rs]


_CLASS_RUNS = (
    '39 45 3i 41 3f 2a 37 1q 36 1q 3a 41 3q 41 39 11 37 22 31 11 33 21 11 31 23 31 1n 31 1v 31 1cq 34 1c '
    '3e 15 37 11 31 11 33l 15 31 12 32 14 31 11 36 11 31 13 31 11 31 1k 31 12b 31 13v 38 14m 31 112 32 11 '
    '36 115 31z 1r 34 14 319 117 3l 2a 34 12 31 12r 31 11 3f 12 37 12 2a 13 32 11 3g 11 31 1u 3t 12h 3b '
    '11 3e 2a 1x 39 12 34 11 35 1m 34 11 39 11 33 11 3n 1p 37 1b 35 1o 31 16 3h 116 31m 11i 33 11 3i 11 '
    '37 1a 34 2a 31 1g 34 18 32 12 32 1m 31 17 31 11 33 14 33 11 3g 11 3d 12 31 13 34 2a 12 32 26 32 11 '
    '38 16 34 12 32 1m 31 17 31 12 31 12 31 12 3v 14 31 11 37 2a 32 13 3g 19 31 13 31 1m 31 17 31 12 31 '
    '15 33 11 3i 11 3f 12 34 2a 39 11 3b 18 32 12 32 1m 31 17 31 12 31 15 33 11 3u 12 31 13 34 2a 31 11 '
    '26 3b 11 31 16 33 13 31 14 33 12 31 11 31 12 33 12 33 13 33 1c 3m 11 3l 2d 3i 18 31 13 31 1n 31 1g '
    '33 11 3q 13 32 11 32 12 34 2a 38 27 31 11 34 18 31 13 31 1n 31 1a 31 15 33 11 3v 12 31 12 34 2a 31 '
    '12 3h 19 31 13 31 115 32 11 3g 11 35 13 31 27 13 34 2j 31 16 35 1i 33 1o 31 19 31 11 32 17 3v 2a 3h '
    '11c 31 12 3c 17 39 2a 313 12 31 11 31 15 31 1o 31 11 31 1a 31 12 39 11 32 15 31 11 39 2a 32 14 3w 11 '
    '3v 2k 3c 18 31 110 3r 15 337 117 3k 11 2a 36 16 34 14 33 11 33 12 37 13 34 1d 3c 11 31 2a 36 112 31 '
    '11 35 11 32 117 31 199 31 14 32 17 31 11 31 14 32 115 31 14 32 1x 31 14 32 17 31 11 31 14 32 1f 31 '
    '11l 31 14 32 11v 3e 2k 33 1g 3g 12e 32 16 33 1h8 32 1h 41 1q 35 123 33 23 18 37 1i 3d 1j 3e 1i 3e 1d '
    '31 13 3f 11g 3z 11 34 11 33 2a 36 2a 3m 2a 36 12h 37 15 32 1y 31 11 35 11y 3a 1v 313 2a 1u 32 15 3b '
    '118 34 1q 36 2b 311 1n 39 11h 317 2a 36 2a 3d 11 32l 11b 3h 18 33 2a 315 1u 3d 12 2a 118 3q 110 3s '
    '2a 33 13 2a 110 32 1b 35 117 32 13 315 14 31 16 31 12 33 11 35 15c 31s 17q 32 16 32 112 32 16 32 18 '
    '31 11 31 11 31 11 31 1v 32 11h 31 17 31 11 33 13 31 17 33 14 32 16 34 1d 35 13 31 17 33 4b 3t 42 35 '
    '41 31b 41 3g 21 11 32 26 35 11 2a 36 1d 32t 11 34 11 32 1a 31 11 33 15 36 11 31 11 31 11 31 14 31 1b '
    '32 14 35 15 34 11 31 21f 12 25 3k6 21o 326 2m 3hi 2u 3vg 16d 36 14 33 12 39 21 32 112 31 11 35 11 32 '
    '11k 37 11 3g 1n 39 17 31 17 31 17 31 17 31 17 31 17 31 17 31 17 328 11 3cw 41 34 12 21 3p 29 37 15 '
    '32 23 12 34 12e 36 13 31 12i 31 14 35 117 31 12m 33 24 3a 1w 31c 1g 3w 2a 3u 28 31 2f 3w 2a 313 2f '
    '38w 1534 31s 1h3h 31v 11a 32 17h 33 1g 2a 12 3k 11b 3g 1v 32 11y 2a 313 19 32 12v 32 11v 32 12 31 11 '
    '31 18 3l 1g 31 13 31 14 31 1n 3d 26 3a 11g 3e 11e 3s 2a 3o 16 33 11 31 12 31 2a 1s 3a 1n 3p 1t 37 '
    '11b 3s 11 2a 36 15 31 1a 2a 15 31 115 3n 13 31 18 34 2a 36 1n 33 11 33 11e 31 11 33 12 32 15 32 11 '
    '31 11 3o 13 32 1b 37 13 3c 16 32 16 32 16 39 17 31 17 31 117 31 1e 36 137 3d 2a 36 18mc 3c 1n 34 11d '
    '36is 1a6 32 12y 312 17 3c 15 35 11 31 1a 31 1d 31 15 31 11 31 12 31 12 31 130 3x 1a3 3i 11s 32 11i '
    '314 1c 338 15 31 13r 3j 2a 37 1q 36 1q 3b 12h 33 16 32 16 32 16 32 13 3z 1c 31 1q 31 1j 31 12 31 1f '
    '32 1e 3y 13f 3c 219 3c 21l 3h 22 36s 1t 33 11d 3g 2r 34 1w 24 39 1k 21 18 21 35 112 3a 1u 32 110 34 '
    '18 31 25 316 14e 32 2a 36 110 34 110 34 114 38 11g 3c 1b 31 1f 31 17 31 12 31 1b 31 1f 31 17 31 12 '
    '33 11g 3c 18n 39 1m 3a 18 3o 16 31 116 31 19 31x 16 32 11 31 118 31 12 33 11 32 1n 32 28 1n 32 27 1v '
    '38 29 31c 1j 31 12 35 25 1m 26 34 1q 31y 11k 34 22 12 2g 32 21a 11 3f 14 31 13 31 1t 3a 29 3n 1t 22 '
    '31 1t 23 3w 18 31 1s 36 25 3g 11i 3a 1m 32 28 1j 35 28 1i 3n 27 328 121 31j 11f 3d 11f 37 26 110 3c '
    '2a 36 2a 1s 39 1n 362 2v 31 116 36 12 3g 13 31n 1t 2a 11 38 1m 3b 24 3r 1i 31a 1l 27 3k 1n 3c 11h 3q '
    '2u 31 12 32 11 3d 119 3w 1p 37 2a 39 110 3f 2a 34 11 32 11 38 1z 33 11 3c 11c 3e 14 3b 2a 11 31 11 '
    '34 2k 3b 1i 31 1p 3j 12 31r 17 31 11 31 14 31 1f 31 1a 37 11b 3h 2a 3b 18 32 12 32 1m 31 17 31 12 31 '
    '15 33 11 3i 11 3c 15 3u 1a 31 11 32 11 31 112 31 11 3p 11 31 11 318 11h 3i 14 35 2a 35 13 3u 11c 3k '
    '12 31 11 38 2a 34m 11b 315 14 310 11c 3k 11 3b 2a 312 117 3d 11 37 2a 36 2k 3s 1r 3l 2c 34 17 355 '
    '118 338 11s 2j 3c 18 32 11 32 18 31 12 31 1o 3f 11 31 11 3e 2a 31y 18 32 113 3g 11 31 11 3s 11 3a '
    '114 37 11 3l 11 3b 11a 3j 11 3i 121 35j 1x 3f 2a 36 19 31 111 3h 11 3f 2t 35 1u 334 17 31 12 31 112 '
    '3l 11 39 2a 36 16 31 12 31 1w 3e 11 37 2a 38m 1j 3f 11 31 1d 31 1y 3s 2a 32e 11 3f 2l 317 1pm 32u '
    '233 3h 15g 3218 12p 3f 1ts 3h 16 3p 132z 35 1g7 35a1 1u 3i 2a 31c6 1ft 37 1v 31 2a 36 127 31 2a 36 '
    '1u 3i 11c 3g 14 3c 2a 31 27 31 1l 35 1j 3c0 119 33 2a 35i 11s 2n 32x 123 35 11 31u 1d 31s 12 31 11 '
    '3s 14qg 38 1ye 315 1a 36w7 14 31 17 31 12 31 183 3f 11 3t 13 32 11 3e 14 38 1b0 31s4 12z 35 1d 33 19 '
    '37 1a 3386 2a 3152 2k 3c 2k 330 2p 33r 12d 31 11z 31 12 32 11 32 12 32 14 31 1c 31 11 31 17 31 11t '
    '31 14 32 18 31 17 31 1s 31 14 31 15 31 11 33 17 31 19g 32 1p 31 1p 31 1v 31 1p 31 1v 31 1p 31 1v 31 '
    '1p 31 1v 31 1p 31 18 32 21e 31ds 1v 36 16 379 11q 342 119 3a 17 32 2a 34 11 38x 1u 3i 118 34 2a 3d2 '
    '1s 34 2a 35y 1u 32 11 2a 3dh 17 31 14 31 12 31 1f 31 15h 32 29 31c 11w 37 11 34 2a 3lz 21n 31 23 31 '
    '24 324 219 31 2f 35e 14 31 1r 31 12 31 11 32 11 31 1a 31 14 31 11 31 11 36 11 34 11 31 11 31 11 31 '
    '13 31 12 31 11 32 11 31 11 31 11 31 11 31 11 31 12 31 11 32 14 31 17 31 14 31 14 31 11 31 1a 31 1h '
    '35 13 31 15 31 1h 3g4 2d 325f 2a 3sm 1wyo 3w 137e 36 166 32 14g2 3e 15rl 3f 1ha 31wi 1f2 315u 13t7 '
    '35 138g 3jgwg '
)


def add_tokenizer(book, tok, capacity, text, vocabulary=None):
    """TEMPORARY adapter (replaced by tokenizer/tabs.py): the tokenizer's tabs added to a layout.Book."""
    from ..layout import Tab

    sheets, names = tokenizer_tabs(tok, capacity, text, vocabulary)
    groups = ["prompt", "tokenizer", "tokenizer", "tokenizer"] + ["tables"] * (len(sheets) - 4)
    tabs = []
    for sheet, group in zip(sheets, groups):
        tab = Tab.__new__(Tab)
        tab.name, tab.group, tab.sheet, tab.frozen, tab.titles = sheet.name, group, sheet, True, []
        tab.row = sheet.extent()[0] + 2
        tabs.append(book.add(tab))
    return tabs[0], names
