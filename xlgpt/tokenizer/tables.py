"""The tokenizer's tables: GPT-2's vocabulary and merges as pair keys and ranks, its byte-level alphabet, and
the Unicode classes of its pre-tokenization regex. The sheet shows them on the Merges, Byte symbols, Unicode
classes and Token texts tabs; bpe.py reads them in Python."""

import bisect
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from xlgpt.package import XlgptError

LETTER, NUMBER, OTHER, SPACE = 1, 2, 3, 4
CLASS_NAMES = {LETTER: "letter", NUMBER: "number", OTHER: "other", SPACE: "whitespace"}


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
    vocab: dict  # symbol string -> id
    V: int  # pair key = left * V + right
    merges: dict  # pair key -> (rank, merged id, "left right" as in merges.txt)
    byte_ids: list  # byte -> initial token id, or None when the vocabulary lacks that byte

    def rank(self, left, right):
        """(rank, merged id, line) of the pair, or None."""
        return self.merges.get(left * self.V + right)


@lru_cache(maxsize=4)
def _tables(vocab_file, merges_file):
    vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
    V = max(vocab.values()) + 1
    merges, rank = {}, 0
    for line in Path(merges_file).read_text(encoding="utf-8").split("\n"):
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


@lru_cache(maxsize=1)
def unicode_to_bytes():
    """bytes_to_unicode's inverse: a byte-level symbol's character -> its byte."""
    return {c: b for b, c in bytes_to_unicode().items()}


def symbol_text(symbol):
    """A byte-level token's text: its UTF-8 bytes decoded, or, for a piece of a character, the bytes as
    <0xC3>-style text (never a replacement character that hides which bytes they are)."""
    to_byte = unicode_to_bytes()
    raw = bytes(to_byte.get(c, 63) for c in symbol)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in raw)


def display(text):
    """Make spaces, line breaks and other control characters visible in a label cell."""
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return "".join(
        chr(0x2400 + ord(c))
        if ord(c) < 32
        else "␡"
        if c == "\x7f"
        else f"\\x{ord(c):02x}"
        if 0x80 <= ord(c) < 0xA0
        else c
        for c in text
    )


def token_texts(tok):
    """Each token's text, made readable like the model's labels."""
    out = [""] * tables(tok).V
    for symbol, i in tables(tok).vocab.items():
        out[i] = display(symbol_text(symbol))
    return out


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


_CLASS_RUNS = (
    "39 45 3i 41 3f 2a 37 1q 36 1q 3a 41 3q 41 39 11 37 22 31 11 33 21 11 31 23 31 1n 31 1v 31 1cq 34 1c "
    "3e 15 37 11 31 11 33l 15 31 12 32 14 31 11 36 11 31 13 31 11 31 1k 31 12b 31 13v 38 14m 31 112 32 11 "
    "36 115 31z 1r 34 14 319 117 3l 2a 34 12 31 12r 31 11 3f 12 37 12 2a 13 32 11 3g 11 31 1u 3t 12h 3b "
    "11 3e 2a 1x 39 12 34 11 35 1m 34 11 39 11 33 11 3n 1p 37 1b 35 1o 31 16 3h 116 31m 11i 33 11 3i 11 "
    "37 1a 34 2a 31 1g 34 18 32 12 32 1m 31 17 31 11 33 14 33 11 3g 11 3d 12 31 13 34 2a 12 32 26 32 11 "
    "38 16 34 12 32 1m 31 17 31 12 31 12 31 12 3v 14 31 11 37 2a 32 13 3g 19 31 13 31 1m 31 17 31 12 31 "
    "15 33 11 3i 11 3f 12 34 2a 39 11 3b 18 32 12 32 1m 31 17 31 12 31 15 33 11 3u 12 31 13 34 2a 31 11 "
    "26 3b 11 31 16 33 13 31 14 33 12 31 11 31 12 33 12 33 13 33 1c 3m 11 3l 2d 3i 18 31 13 31 1n 31 1g "
    "33 11 3q 13 32 11 32 12 34 2a 38 27 31 11 34 18 31 13 31 1n 31 1a 31 15 33 11 3v 12 31 12 34 2a 31 "
    "12 3h 19 31 13 31 115 32 11 3g 11 35 13 31 27 13 34 2j 31 16 35 1i 33 1o 31 19 31 11 32 17 3v 2a 3h "
    "11c 31 12 3c 17 39 2a 313 12 31 11 31 15 31 1o 31 11 31 1a 31 12 39 11 32 15 31 11 39 2a 32 14 3w 11 "
    "3v 2k 3c 18 31 110 3r 15 337 117 3k 11 2a 36 16 34 14 33 11 33 12 37 13 34 1d 3c 11 31 2a 36 112 31 "
    "11 35 11 32 117 31 199 31 14 32 17 31 11 31 14 32 115 31 14 32 1x 31 14 32 17 31 11 31 14 32 1f 31 "
    "11l 31 14 32 11v 3e 2k 33 1g 3g 12e 32 16 33 1h8 32 1h 41 1q 35 123 33 23 18 37 1i 3d 1j 3e 1i 3e 1d "
    "31 13 3f 11g 3z 11 34 11 33 2a 36 2a 3m 2a 36 12h 37 15 32 1y 31 11 35 11y 3a 1v 313 2a 1u 32 15 3b "
    "118 34 1q 36 2b 311 1n 39 11h 317 2a 36 2a 3d 11 32l 11b 3h 18 33 2a 315 1u 3d 12 2a 118 3q 110 3s "
    "2a 33 13 2a 110 32 1b 35 117 32 13 315 14 31 16 31 12 33 11 35 15c 31s 17q 32 16 32 112 32 16 32 18 "
    "31 11 31 11 31 11 31 1v 32 11h 31 17 31 11 33 13 31 17 33 14 32 16 34 1d 35 13 31 17 33 4b 3t 42 35 "
    "41 31b 41 3g 21 11 32 26 35 11 2a 36 1d 32t 11 34 11 32 1a 31 11 33 15 36 11 31 11 31 11 31 14 31 1b "
    "32 14 35 15 34 11 31 21f 12 25 3k6 21o 326 2m 3hi 2u 3vg 16d 36 14 33 12 39 21 32 112 31 11 35 11 32 "
    "11k 37 11 3g 1n 39 17 31 17 31 17 31 17 31 17 31 17 31 17 31 17 328 11 3cw 41 34 12 21 3p 29 37 15 "
    "32 23 12 34 12e 36 13 31 12i 31 14 35 117 31 12m 33 24 3a 1w 31c 1g 3w 2a 3u 28 31 2f 3w 2a 313 2f "
    "38w 1534 31s 1h3h 31v 11a 32 17h 33 1g 2a 12 3k 11b 3g 1v 32 11y 2a 313 19 32 12v 32 11v 32 12 31 11 "
    "31 18 3l 1g 31 13 31 14 31 1n 3d 26 3a 11g 3e 11e 3s 2a 3o 16 33 11 31 12 31 2a 1s 3a 1n 3p 1t 37 "
    "11b 3s 11 2a 36 15 31 1a 2a 15 31 115 3n 13 31 18 34 2a 36 1n 33 11 33 11e 31 11 33 12 32 15 32 11 "
    "31 11 3o 13 32 1b 37 13 3c 16 32 16 32 16 39 17 31 17 31 117 31 1e 36 137 3d 2a 36 18mc 3c 1n 34 11d "
    "36is 1a6 32 12y 312 17 3c 15 35 11 31 1a 31 1d 31 15 31 11 31 12 31 12 31 130 3x 1a3 3i 11s 32 11i "
    "314 1c 338 15 31 13r 3j 2a 37 1q 36 1q 3b 12h 33 16 32 16 32 16 32 13 3z 1c 31 1q 31 1j 31 12 31 1f "
    "32 1e 3y 13f 3c 219 3c 21l 3h 22 36s 1t 33 11d 3g 2r 34 1w 24 39 1k 21 18 21 35 112 3a 1u 32 110 34 "
    "18 31 25 316 14e 32 2a 36 110 34 110 34 114 38 11g 3c 1b 31 1f 31 17 31 12 31 1b 31 1f 31 17 31 12 "
    "33 11g 3c 18n 39 1m 3a 18 3o 16 31 116 31 19 31x 16 32 11 31 118 31 12 33 11 32 1n 32 28 1n 32 27 1v "
    "38 29 31c 1j 31 12 35 25 1m 26 34 1q 31y 11k 34 22 12 2g 32 21a 11 3f 14 31 13 31 1t 3a 29 3n 1t 22 "
    "31 1t 23 3w 18 31 1s 36 25 3g 11i 3a 1m 32 28 1j 35 28 1i 3n 27 328 121 31j 11f 3d 11f 37 26 110 3c "
    "2a 36 2a 1s 39 1n 362 2v 31 116 36 12 3g 13 31n 1t 2a 11 38 1m 3b 24 3r 1i 31a 1l 27 3k 1n 3c 11h 3q "
    "2u 31 12 32 11 3d 119 3w 1p 37 2a 39 110 3f 2a 34 11 32 11 38 1z 33 11 3c 11c 3e 14 3b 2a 11 31 11 "
    "34 2k 3b 1i 31 1p 3j 12 31r 17 31 11 31 14 31 1f 31 1a 37 11b 3h 2a 3b 18 32 12 32 1m 31 17 31 12 31 "
    "15 33 11 3i 11 3c 15 3u 1a 31 11 32 11 31 112 31 11 3p 11 31 11 318 11h 3i 14 35 2a 35 13 3u 11c 3k "
    "12 31 11 38 2a 34m 11b 315 14 310 11c 3k 11 3b 2a 312 117 3d 11 37 2a 36 2k 3s 1r 3l 2c 34 17 355 "
    "118 338 11s 2j 3c 18 32 11 32 18 31 12 31 1o 3f 11 31 11 3e 2a 31y 18 32 113 3g 11 31 11 3s 11 3a "
    "114 37 11 3l 11 3b 11a 3j 11 3i 121 35j 1x 3f 2a 36 19 31 111 3h 11 3f 2t 35 1u 334 17 31 12 31 112 "
    "3l 11 39 2a 36 16 31 12 31 1w 3e 11 37 2a 38m 1j 3f 11 31 1d 31 1y 3s 2a 32e 11 3f 2l 317 1pm 32u "
    "233 3h 15g 3218 12p 3f 1ts 3h 16 3p 132z 35 1g7 35a1 1u 3i 2a 31c6 1ft 37 1v 31 2a 36 127 31 2a 36 "
    "1u 3i 11c 3g 14 3c 2a 31 27 31 1l 35 1j 3c0 119 33 2a 35i 11s 2n 32x 123 35 11 31u 1d 31s 12 31 11 "
    "3s 14qg 38 1ye 315 1a 36w7 14 31 17 31 12 31 183 3f 11 3t 13 32 11 3e 14 38 1b0 31s4 12z 35 1d 33 19 "
    "37 1a 3386 2a 3152 2k 3c 2k 330 2p 33r 12d 31 11z 31 12 32 11 32 12 32 14 31 1c 31 11 31 17 31 11t "
    "31 14 32 18 31 17 31 1s 31 14 31 15 31 11 33 17 31 19g 32 1p 31 1p 31 1v 31 1p 31 1v 31 1p 31 1v 31 "
    "1p 31 1v 31 1p 31 18 32 21e 31ds 1v 36 16 379 11q 342 119 3a 17 32 2a 34 11 38x 1u 3i 118 34 2a 3d2 "
    "1s 34 2a 35y 1u 32 11 2a 3dh 17 31 14 31 12 31 1f 31 15h 32 29 31c 11w 37 11 34 2a 3lz 21n 31 23 31 "
    "24 324 219 31 2f 35e 14 31 1r 31 12 31 11 32 11 31 1a 31 14 31 11 31 11 36 11 34 11 31 11 31 11 31 "
    "13 31 12 31 11 32 11 31 11 31 11 31 11 31 11 31 12 31 11 32 14 31 17 31 14 31 14 31 11 31 1a 31 1h "
    "35 13 31 15 31 1h 3g4 2d 325f 2a 3sm 1wyo 3w 137e 36 166 32 14g2 3e 15rl 3f 1ha 31wi 1f2 315u 13t7 "
    "35 138g 3jgwg "
)
