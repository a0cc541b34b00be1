"""The tokenizer tabs: the sheet itself tokenizes typed text exactly like GPT-2's tokenizer.

Expected ids always come from Hugging Face `tokenizers` (the library GPT-2's byte-level BPE is defined
by here), never from the sheet or from xlgpt's Python mirror of it. Real LibreOffice recalculates the whole
corpus (tests/tokenizer_corpus.json: hand-written strings for each rule of the regex and of BPE, plus
seeded random mixes), Gnumeric a quarter of it, real `formulas` a few texts, also with Excel's UTF-16 text
functions emulated.
"""

import json
import random
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import openpyxl
import pytest

from helpers import BUNDLED
from xlgpt.engines import tokenizer as sheet_tokenizer
from xlgpt.engines.rects import read_rects
from xlgpt.package import XlgptError
from xlgpt.sheet import text as cell_text
from xlgpt.tokenizer import bpe, tables, tabs
from xlgpt.tokenizer import hf as tokenizer

# the tokenizer's API in one namespace: tables, the Python statement (bpe), the tabs, and engine reading
st = SimpleNamespace(
    **{k: getattr(m, k) for m in (tables, bpe, tabs, cell_text) for k in dir(m) if not k.startswith("_")},
    **{k: getattr(sheet_tokenizer, k) for k in ("evaluate_books", "evaluate_tokens", "tokenize_with_sheets")},
)

CORPUS_FILE = Path(__file__).resolve().parent / "tokenizer_corpus.json"
CORPUS = json.loads(CORPUS_FILE.read_text())
KNOWN = {
    "Mike is quick. He moves": [16073, 318, 2068, 13, 679, 6100],
    "funology reinjury": [12543, 1435, 6865, 21871],
    "Hello, world!": [15496, 11, 995, 0],
}
CLASSIC = {
    "MID",
    "LEN",
    "IF",
    "ISNUMBER",
    "AND",
    "OR",
    "NOT",
    "EXACT",
    "CHOOSE",
    "INT",
    "MOD",
    "MIN",
    "SUM",
    "COUNT",
    "MATCH",
    "INDEX",
    "VLOOKUP",
    "_xlfn.UNICODE",
    "_xlfn.UNICHAR",
    "CHAR",
    "MAX",
    "IFERROR",
    "LOOKUP",
    "SMALL",
    "SUMIF",
}


@pytest.fixture(scope="module")
def gpt2():
    return tokenizer.load("gpt2")


def train_small(directory, texts, vocab_size=400, full_alphabet=True):
    """A small byte-level BPE trained with Hugging Face tokenizers (its own vocab.json + merges.txt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [],
    )
    tk.train_from_iterator(texts, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tk.model.save(str(directory))
    return tokenizer.load(directory)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("small") / "tok", CORPUS * 3)


def hf_ids(tok, text):
    return tok.hf.encode(text).ids


def assert_all_match(tok, texts, results):
    bad = [
        (t, r.status, r.ids, hf_ids(tok, t))
        for t, r in zip(texts, results)
        if not r.ok or r.ids != hf_ids(tok, t) or r.count != len(r.ids)
    ]
    assert len(results) == len(texts)
    assert not bad, f"{len(bad)} of {len(texts)} texts differ from Hugging Face, e.g. {bad[:5]}"


# --- the design, checked against Hugging Face without any spreadsheet -------------------------------


def test_corpus_covers_the_rules(gpt2):
    for text, ids in KNOWN.items():
        assert text in CORPUS and hf_ids(gpt2, text) == ids
    assert len(CORPUS) >= 300 and len(set(CORPUS)) == len(CORPUS)
    joined = "".join(CORPUS)
    for needle in ["don't", "'S", "rock'n'roll", "''s", "\r\n", "\t", "\u3000", "\u00a0", "👨‍👩‍👧", "日本語", "हिन्दी"]:
        assert needle in joined
    assert any(len(t.encode()) >= 90 for t in CORPUS) and any(ord(c) > 0xFFFF for c in joined)


def _probe(pre, lead, cps, tail):
    """For each code point c: does `lead + c + tail` start with one piece that swallows c (length of lead+c)?"""
    text = "".join(lead + chr(c) + tail for c in cps)
    size = len(lead) + 1 + len(tail)
    ends = {s: e for _, (s, e) in pre.pre_tokenize_str(text)}
    return [ends.get(i * size) == i * size + len(lead) + 1 for i in range(len(cps))]


@pytest.mark.engines  # slow (~3 s): every class run against the regex engine
def test_character_classes_are_hugging_faces(gpt2):
    """The Unicode classes tab follows tokenizers' regex engine (a newer Unicode than Python's unicodedata):
    every BMP code point, both sides of every range boundary, and a sample of the astral planes."""
    runs = st.class_runs()
    cps = set(range(0xD800)) | set(range(0xE000, 0x10000))
    for s, _ in runs:
        cps |= {c for c in (s - 1, s, s + 1) if 0 <= c < 0x110000}
    cps |= set(random.Random(0).sample(range(0x10000, 0x110000), 20000))
    cps = sorted(c for c in cps if not 0xD800 <= c <= 0xDFFF)
    pre = gpt2.hf.pre_tokenizer
    letter = _probe(pre, "a", cps, "\n")
    number = _probe(pre, "0", cps, "\n")
    # whitespace: "a" + c + "\n\n" + next "a": `\s+(?!\S)` takes c and one newline when c is whitespace
    text = "".join("a" + chr(c) + "\n\n" for c in cps)
    ends = {s: e for _, (s, e) in pre.pre_tokenize_str(text)}
    space = [ends.get(4 * i + 1) == 4 * i + 3 for i in range(len(cps))]
    wrong = []
    for c, is_l, is_n, is_s in zip(cps, letter, number, space):
        expected = st.LETTER if is_l else st.NUMBER if is_n else st.SPACE if is_s else st.OTHER
        if st.char_class(c) != expected:
            wrong.append((hex(c), st.char_class(c), expected))
    assert not wrong, wrong[:10]


def _random_texts(seed, n, alphabet):
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) for _ in range(n)]


ALPHABET = list("ab '\n\t\r1!.sStlrevdmE\u00a0é日🙂,") + ["'s", "'ll", "  ", "'RE", "\u3000"]


def test_state_machine_and_rounds_match_hugging_face(gpt2):
    """xlgpt's Python mirror of the sheet (the same state machine and round-wise BPE) against tokenizers:
    the design is right independently of any spreadsheet engine (capacity_for relies on it)."""
    texts = CORPUS + _random_texts(1, 3000, ALPHABET)
    pre = gpt2.hf.pre_tokenizer
    for text in texts:
        assert st.pieces(text) == [text[a:b] for _, (a, b) in pre.pre_tokenize_str(text)], text
    tab = st.tables(gpt2)
    for text in texts:
        ids = []
        for piece in st.pieces(text):
            ids += st.bpe_rounds(tab, [tab.byte_ids[b] for b in piece.encode()])[0]
        assert ids == hf_ids(gpt2, text), text


# --- the workbook ------------------------------------------------------------------------------------


@pytest.mark.engines
def test_default_book_layout_and_libreoffice(gpt2, tmp_path):
    """The default book: tab order, names, only classic functions, and LibreOffice gets the published ids."""
    text = "Mike is quick. He moves"
    path = st.write_tokenizer_book(tmp_path / "tok.xlsx", gpt2, text)
    wb = openpyxl.load_workbook(path, read_only=True)
    assert wb.sheetnames == [
        "Prompt",
        "Chars",
        "Bytes",
        "BPE",
        "Merges",
        "Byte symbols",
        "Unicode classes",
        "Token texts",
    ]
    names = {n: d.attr_text for n, d in wb.defined_names.items()}
    assert names["Prompt"] == "Prompt!$C$3" and names["TokenizerStatus"] == "Prompt!$C$4"
    assert names["SheetTokenCount"] == "Prompt!$C$5"
    assert names["SheetTokenIds"] == "Prompt!$C$7:$ST$7"  # 512 token cells
    assert wb["Prompt"]["C3"].value == text
    wb.close()
    cap = st.Capacity()
    assert (cap.chars, cap.bytes, cap.rounds, cap.tokens) == (256, 512, 64, 512)
    with zipfile.ZipFile(path) as zf:
        xml = "".join(zf.read(n).decode() for n in zf.namelist() if n.startswith("xl/worksheets/"))
    # one formula per row and round, written once (a shared formula), over the row's slots
    formulas = re.findall(r'<f(?: t="shared" ref="[A-Z0-9:]+" si="\d+")?>([^<]*)</f>', xml)
    shared = len(re.findall(r'<f t="shared" si="\d+"/>', xml))
    assert 't="array"' not in xml and len(formulas) < 5_000 and shared > 250_000
    used = {f for text in formulas for f in re.findall(r"([A-Za-z_.]+)\(", text)}
    assert used <= CLASSIC, used - CLASSIC
    assert st.evaluate_tokens(path, "libreoffice") == KNOWN[text]


@pytest.mark.engines
def test_corpus_with_libreoffice(gpt2, tmp_path):
    """Every corpus text, each with its own tabs sized to it, recalculated by LibreOffice in one run."""
    results = st.tokenize_with_sheets(gpt2, CORPUS, "libreoffice", directory=tmp_path, per_book=100)
    assert_all_match(gpt2, CORPUS, results)


@pytest.mark.engines  # ~30 s: the fast loop types four prompts into a book instead (test_ironcalc.py)
def test_corpus_subset_with_ironcalc(gpt2, tmp_path):
    """IronCalc (pip only, in this process) on every eighth corpus text: no function of the sheet needs to work
    element by element over a range, which IronCalc's do not all do (docs/engines.md)."""
    texts = CORPUS[::8]
    assert_all_match(gpt2, texts, st.tokenize_with_sheets(gpt2, texts, "ironcalc", directory=tmp_path, per_book=50))


@pytest.mark.engines
def test_formulas_engine(small, tmp_path):
    """The `formulas` package on short texts, with a small tokenizer's tables (GPT-2's 50,000 merges take it ~80 s
    to load; the same formulas over GPT-2's tables are checked by LibreOffice, IronCalc and Gnumeric above)."""
    texts = ["Mike is quick. He moves", "I'm y'all 'S ''s\r\n\t🙂 é 12"]
    assert_all_match(small, texts, st.tokenize_with_sheets(small, texts, "formulas", directory=tmp_path))


@pytest.mark.engines
def test_corpus_subset_with_gnumeric(gpt2, tmp_path):
    """Gnumeric, a third implementation of Excel's functions, on every fourth corpus text (one ssconvert
    run per batch book of 40)."""
    texts = CORPUS[::4]
    assert_all_match(gpt2, texts, st.tokenize_with_sheets(gpt2, texts, "gnumeric", directory=tmp_path))


@pytest.fixture
def excel_text_functions(monkeypatch):
    """Make `formulas` count text like Excel: MID and LEN on UTF-16 code units, so an emoji is two
    characters and MID returns its lone surrogate halves (UNICODE then gives 0xD83D, ...)."""
    from formulas.functions import Error, get_functions, text, wrap_ufunc

    def units(s):
        return text._str(s).encode("utf-16-le", "surrogatepass")

    def mid(s, start, n):
        i = int(start or 0) - 1
        j = i + int(n or 0)
        return units(s)[2 * i : 2 * j].decode("utf-16-le", "surrogatepass") if 0 <= i <= j else Error.errors["#VALUE!"]

    for table in (text.FUNCTIONS, get_functions()):  # get_functions() is cached: formulas compiles from it
        monkeypatch.setitem(table, "MID", wrap_ufunc(mid, **text._kw0))
        monkeypatch.setitem(table, "LEN", wrap_ufunc(lambda s: len(units(s)) // 2, **text._kw1))


@pytest.mark.engines
def test_surrogate_pairs_as_excel_sees_them(small, tmp_path, excel_text_functions):
    """With Excel's UTF-16 text functions the sheet joins surrogate pairs and still gets every id right
    (LibreOffice and plain `formulas` hand it whole code points instead)."""
    texts = ["a🙂b", " 🙂x", "𝐀𝐁 c", "👨‍👩‍👧 x\n🙂", "'s🙂 🙂\u3000🙂"]
    path = tmp_path / "excel.xlsx"
    st.write_batch_book(path, small, texts)
    results = st.evaluate_books([path], "formulas")[0]
    assert_all_match(small, texts, results)
    # the Chars tab really saw surrogates: its first four slots of three rows, found by their labels
    rows = [chars_row(path, "Chars 1", label) for label in ("code (UNICODE", "code point", "UTF-8 bytes")]
    units, points, utf8 = (rect[0] for rect in read_rects([(path, rows)], "formulas")[0])
    assert units == [97, 0xD83D, 0xDE42, 98]  # code units
    assert points[1:3] == [0x1F642, 0x1F642]  # code points: the pair joined
    assert utf8 == [1, 4, 0, 1]  # UTF-8 bytes


def chars_row(path, sheet, label, width=4):
    """The first `width` slots of the row of `sheet` whose label (column A) starts with `label`."""
    from xlgpt.sheet.layout import FIRST_COL, LABEL_COL, Rect

    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        labels = wb[sheet].iter_rows(min_col=LABEL_COL, max_col=LABEL_COL, values_only=True)
        row = next(i for i, (text,) in enumerate(labels, 1) if str(text or "").startswith(label))
    finally:
        wb.close()
    return Rect(sheet, row, FIRST_COL, 1, width)


@pytest.mark.engines
def test_any_byte_level_bpe(small, tmp_path):
    """Nothing is GPT-2 specific: a small BPE trained here (its own vocabulary size and merges)."""
    texts = CORPUS[::8]
    path = st.write_tokenizer_book(tmp_path / "small.xlsx", small, texts)  # a list: one batch book
    assert_all_match(small, texts, st.evaluate_books([path], "libreoffice")[0])


@pytest.mark.engines
def test_capacity_overflow_says_so_and_shows_no_ids(gpt2, tmp_path):
    cases = [  # text, capacity, expected status
        ("Hello, world!", st.Capacity(5, 64, 8), "Too long: 13 characters; this sheet holds at most 5."),
        ("éééé", st.Capacity(10, 6, 8), "Too long: 8 UTF-8 bytes; this sheet holds at most 6."),
        ("Hello", st.Capacity(10, 10, 1), "Not finished: merges still apply after 1 rounds"),
        ("Hello, world!", st.Capacity(20, 20, 8, tokens=3), "Too many tokens: 4; this sheet holds at most 3."),
        ("Hello, world!", st.capacity_for(["Hello, world!"], gpt2), "ok"),
        ("", st.Capacity(4, 4, 1), "ok"),
    ]
    assert st.capacity_for(["Hello"], gpt2).rounds > 1
    path = tmp_path / "overflow.xlsx"
    st.write_batch_book(path, gpt2, [c[0] for c in cases], [c[1] for c in cases])
    results = st.evaluate_books([path], "libreoffice")[0]
    assert len(results) == len(cases)
    for (text, _, status), r in zip(cases, results):
        assert r.status.startswith(status), (text, r.status)
        if status == "ok":
            assert r.ids == hf_ids(gpt2, text) and r.count == len(r.ids)
        else:
            assert r.ids == [] and r.count == ""


def _tokenizer_files(directory, vocab, merges):
    directory.mkdir()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    return tokenizer.load(directory)


@pytest.mark.engines
def test_odd_vocabularies(tmp_path):
    """A vocabulary without some bytes: the sheet refuses (BPE would silently drop them). A pair listed
    twice in merges.txt: like Hugging Face, its last rank counts."""
    bare = _tokenizer_files(tmp_path / "bare", {"a": 0, "b": 1, "ab": 2}, ["a b"])
    dup = _tokenizer_files(tmp_path / "dup", {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, ["a b", "b c", "a b"])
    assert hf_ids(dup, "abc") == [0, 4] and st.tables(dup).rank(0, 1)[0] == 2
    with pytest.raises(XlgptError, match="cannot encode"):
        st.capacity_for(["abc"], bare)
    books = [(tmp_path / "bare.xlsx", bare, ["abab", "abc"]), (tmp_path / "dup.xlsx", dup, ["abc", "abcabc"])]
    results = st.evaluate_books(
        [st.write_batch_book(p, tok, texts, [st.Capacity(6, 6, 3)] * 2) for p, tok, texts in books], "libreoffice"
    )
    assert results[0][0].ok and results[0][0].ids == [2, 2] == hf_ids(bare, "abab")
    assert results[0][1].status == "The tokenizer has no token for some bytes of this text."
    assert results[0][1].ids == [] and results[0][1].count == ""
    assert [r.ids for r in results[1]] == [hf_ids(dup, "abc"), hf_ids(dup, "abcabc")] and all(r.ok for r in results[1])


@pytest.mark.skipif(not (BUNDLED / "vocab.json").is_file(), reason="no bundled tokenizer")
@pytest.mark.engines
def test_bundled_models_tokenizer(tmp_path):
    tok = tokenizer.load(BUNDLED)
    texts = ["O Romeo, Romeo, wherefore art", "ROMEO:\nBut soft, what light through yonder window breaks?"] + CORPUS[
        1::12
    ]
    kept = [t for t in texts if all(b is not None for b in (st.tables(tok).byte_ids[x] for x in t.encode()))]
    # The bundled vocabulary has a token for each of the 256 byte symbols (tokenizers' own alphabet), so
    # no text may be filtered away: the sheet must tokenize all of them.
    from tokenizers.pre_tokenizers import ByteLevel

    assert sum(s in tok.hf.get_vocab() for s in ByteLevel.alphabet()) == 256
    assert kept == texts and len(texts) > 20
    assert_all_match(tok, texts, st.tokenize_with_sheets(tok, texts, "libreoffice", directory=tmp_path))


@pytest.mark.engines
def test_typing_another_prompt_changes_the_ids(small, tmp_path):
    """Edit the Prompt cell of a written book (as a person would) and the sheet tokenizes the new text
    (the small tokenizer keeps openpyxl's load and save quick)."""
    first, second = "funology reinjury", "Hello, world! don't"
    cap = st.capacity_for([first, second], small)
    path = st.write_tokenizer_book(tmp_path / "a.xlsx", small, first, cap)
    wb = openpyxl.load_workbook(path)
    wb["Prompt"]["C3"] = second
    edited = tmp_path / "b.xlsx"
    wb.save(edited)
    a, b = st.evaluate_books([path, edited], "libreoffice")
    assert a[0].ids == hf_ids(small, first) and b[0].ids == hf_ids(small, second) != a[0].ids


def test_prompt_cell_keeps_every_character():
    """Texts XML or LibreOffice would alter in a plain text cell become a formula building them."""
    assert st.prompt_value("Hello\nworld") == "Hello\nworld"
    assert st.prompt_value("a\r\nb") == '"a"&CHAR(13)&CHAR(10)&"b"'
    assert st.prompt_value("x\ty\nz") == '"x"&CHAR(9)&"y"&CHAR(10)&"z"'
    assert st.prompt_value('say "_x0041_"') == '"say ""_"&"x0041_"&""""'
    assert isinstance(st.prompt_value("a\x0bb"), st.Formula)


def test_bad_capacity():
    with pytest.raises(XlgptError, match="positive"):
        st.Capacity(chars=0)
