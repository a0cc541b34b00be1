"""GPT-2's byte-level BPE in plain Python: the statement the sheet follows, row for row.

1. Pre-tokenization splits the text into pieces, like GPT-2's regex
   ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``.
   Each character gets a class (tables.char_class) and a contraction length; then the RULES below decide,
   character by character and from neighbouring characters only, where a piece starts. The same RULES
   are rendered as the Chars tab's formulas (tabs.py), so they are written once.
2. Each piece's UTF-8 bytes become GPT-2's initial token ids.
3. Merge rounds: in every round each piece merges every occurrence (left to right, no overlaps) of its
   lowest-ranked adjacent pair, until no pair has a rank -- the order Hugging Face `tokenizers` merges in.
"""

from dataclasses import dataclass

from xlgpt.package import XlgptError
from xlgpt.tokenizer.tables import SPACE, char_class, tables

CONTRACTIONS = (("s", "t", "m", "d"), ("re", "ve", "ll"))  # after "'", case-sensitive as in GPT-2's regex


@dataclass(frozen=True)
class Capacity:
    """How much text a sheet can tokenize: characters (UTF-16 units in Excel, code points elsewhere),
    UTF-8 bytes, merge rounds (a piece of n bytes needs at most n - 1) and token cells (default: bytes).

    64 rounds by default: every piece of up to 65 bytes finishes, and in practice far longer ones do (the
    hardest text of tests/tokenizer_corpus.json, a 60-byte CamelCase identifier, takes 36 rounds with
    GPT-2's merges and 17 with the bundled model's; English words take ~15). Each round is ~9 rows of 512
    slots, the largest part of the default book: 100 rounds cost the `formulas` engine ~5 s more."""

    chars: int = 256
    bytes: int = 512
    rounds: int = 64
    tokens: int = 0

    def __post_init__(self):
        for f in ("chars", "bytes", "rounds", "tokens"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < (0 if f == "tokens" else 1):
                raise XlgptError(f"tokenizer capacity: {f} must be a positive integer")
            # characters, bytes and tokens are columns of the sheet; a merge round takes rows, and a piece of
            # n bytes never needs more than n - 1 of them
            if getattr(self, f) > 16_384:
                raise XlgptError(f"tokenizer capacity: {f} {getattr(self, f):,} is more than a sheet's 16,384 columns")
        if not self.tokens:
            object.__setattr__(self, "tokens", self.bytes)

    def at_least(self, other):
        """This capacity, enlarged where `other` needs more characters, bytes or rounds."""
        return Capacity(*(max(getattr(self, f), getattr(other, f)) for f in ("chars", "bytes", "rounds")))


# --- 1. pre-tokenization -------------------------------------------------------------------------------
# Each rule computes one value per character from the rows before it, at this character (offset 0) or
# a neighbour (-1: the previous character, +1: the next). `x` is a backend: Values (below) evaluates a
# rule in Python; tabs.Formulas renders the same rule as one array formula over a row of the Chars tab.
# Inputs: "code point", "class" (1 letter, 2 number, 3 other, 4 whitespace) and "contraction" (2 for
# 's 't 'm 'd, 3 for 're 've 'll at an apostrophe, else 0); "" / None past the text.


def continues(x):
    """Does this character continue the piece of the previous one, going by classes alone?"""
    k, before, after = x.at("class"), x.at("class", -1), x.at("class", +1)
    return x.if_(
        x.first(),
        0,
        x.if_(
            x.less(before, SPACE),
            x.equal(k, before),  # letters, numbers, other: same class
            x.if_(
                x.both(x.equal(x.at("code point", -1), 32), x.less(k, SPACE)),
                1,  # " " + word
                x.both(
                    x.equal(k, SPACE),  # \s+(?!\S): whitespace that is
                    x.either(x.blank(after), x.equal(after, SPACE)),
                ),
            ),
        ),
    )  # not before a word


def contraction_taken(x):
    """A contraction ('s, 're, ...) starts here: its length, when the apostrophe starts a piece."""
    return x.if_(x.equal(x.at("continues"), 1), 0, x.at("contraction"))


def contraction_to_come(x):
    """Characters of a contraction still to come after this one."""
    return x.if_(
        x.more(x.at("contraction taken"), 0),
        x.plus(x.at("contraction taken"), -1),
        x.if_(x.equal(x.at("contraction taken", -1), 3), 1, 0),
    )


def in_contraction(x):
    return x.either(x.more(x.at("contraction taken"), 0), x.more(x.at("contraction to come", -1), 0))


def starts(x):
    """Does a new piece start here? (Never inside a contraction; always right after one.)"""
    return x.if_(
        x.blank(x.at("class")),
        0,
        x.if_(
            x.equal(x.at("UTF-8 bytes"), 0),
            0,  # the second half of a surrogate pair (Excel)
            x.if_(
                x.more(x.at("contraction to come", -1), 0),
                0,
                x.if_(x.equal(x.at("in a contraction", -1), 1), 1, x.if_(x.equal(x.at("continues"), 1), 0, 1)),
            ),
        ),
    )


# (row name, row label, rule), in order: the Chars tab shows one row per rule
RULES = [
    ("continues", "continues the previous piece (by classes)", continues),
    ("contraction taken", "a contraction starts here: its length", contraction_taken),
    ("contraction to come", "contraction characters still to come", contraction_to_come),
    ("in a contraction", "in a contraction", in_contraction),
    ("starts", "starts a new piece", starts),
]


class Values:
    """The Python backend of RULES: values of character i; None outside the text."""

    def __init__(self, rows, i):
        self.rows, self.i = rows, i

    def at(self, name, offset=0):
        row, j = self.rows[name], self.i + offset
        return row[j] if 0 <= j < len(row) else None

    def first(self):
        return self.i == 0

    @staticmethod
    def if_(cond, a, b):
        return a if cond else b

    @staticmethod
    def equal(a, b):
        return a is not None and a == b

    @staticmethod
    def less(a, b):
        return a is not None and a < b

    @staticmethod
    def more(a, b):
        return a is not None and a > b

    @staticmethod
    def plus(a, n):
        return a + n

    @staticmethod
    def blank(a):
        return a is None

    @staticmethod
    def both(a, b):
        return int(bool(a) and bool(b))

    @staticmethod
    def either(a, b):
        return int(bool(a) or bool(b))


def contraction(text, i):
    if text[i] != "'":
        return 0
    return 2 if text[i + 1 : i + 2] in CONTRACTIONS[0] else 3 if text[i + 1 : i + 3] in CONTRACTIONS[1] else 0


def piece_starts(text):
    """Run RULES over the text's characters: 1 where a piece starts, else 0."""
    rows = {
        "code point": [ord(c) for c in text],
        "class": [char_class(ord(c)) for c in text],
        "contraction": [contraction(text, i) for i in range(len(text))],
        "UTF-8 bytes": [len(c.encode("utf-8")) for c in text],
    }
    for name, _, rule in RULES:
        rows[name] = []
        rows[name].extend(int(rule(Values(rows, i))) for i in range(len(text)))
    return rows["starts"]


def pieces(text):
    """GPT-2's pre-tokenization of `text`."""
    out = []
    for c, start in zip(text, piece_starts(text)):
        if start:
            out.append("")
        out[-1] += c
    return out


# --- 2. and 3. bytes and merge rounds --------------------------------------------------------------------


def merge_round(tab, ids):
    """One round on one piece: merge every occurrence of its lowest-ranked pair, left to right.
    Returns the new ids, or None when no pair merges (the piece is finished)."""
    ranks = [tab.rank(a, b) for a, b in zip(ids, ids[1:])]
    lowest = min((r[0] for r in ranks if r), default=None)
    if lowest is None:
        return None
    out, j = [], 0
    while j < len(ids):
        if j + 1 < len(ids) and ranks[j] and ranks[j][0] == lowest:
            out.append(ranks[j][1])  # the merged token
            j += 2
        else:
            out.append(ids[j])
            j += 1
    return out


def bpe_rounds(tab, ids):
    """Merge one piece's byte ids round by round. Returns (final ids, rounds used)."""
    rounds = 0
    while (merged := merge_round(tab, ids)) is not None:
        ids, rounds = merged, rounds + 1
    return ids, rounds


def byte_ids(tab, text, piece):
    ids = [tab.byte_ids[b] for b in piece.encode("utf-8")]
    if None in ids:
        raise XlgptError(f"the tokenizer cannot encode {text!r} (its vocabulary lacks some bytes)")
    return ids


def encode(tok, text):
    tab = tables(tok)
    return [i for piece in pieces(text) for i in bpe_rounds(tab, byte_ids(tab, text, piece))[0]]


def utf16_len(text):
    return len(text.encode("utf-16-le")) // 2


def needs(tok, text):
    """(UTF-16 length, UTF-8 bytes, merge rounds, tokens) the sheet needs for `text`."""
    tab = tables(tok)
    rounds = tokens = 0
    for piece in pieces(text):
        ids, r = bpe_rounds(tab, byte_ids(tab, text, piece))
        rounds, tokens = max(rounds, r), tokens + len(ids)
    return utf16_len(text), len(text.encode("utf-8")), rounds, tokens


def capacity_for(texts, tok):
    """The smallest capacity that tokenizes every text (Excel's UTF-16 length counts as characters)."""
    if isinstance(texts, str):
        texts = [texts]
    n = [needs(tok, t) for t in texts]
    return Capacity(*(max([1] + [x[f] for x in n]) for f in range(4)))
