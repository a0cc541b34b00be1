"""Numbers present on open: every formula cell carries its cached value (the reference's stage outputs, and each
op's other blocks computed from them), so a viewer that does not calculate shows the right numbers; and every
engine still recalculates every cell rather than trusting them."""

import json
import re
import zipfile

import numpy as np
import openpyxl
import pytest

from helpers import BUNDLED, FIXTURES, expected, tokens_arg, xlgpt
from xlgpt.model import reference
from xlgpt.model.checkpoint import as_written, load
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import parse_ref, read_book
from xlgpt.tokenizer.hf import load as load_tokenizer


def formula_cells(path, values=None):
    """{(sheet, row, col): cached value} of every cell a formula computes (array formulas: every cell of their
    range), as openpyxl reads the file with data_only=True (None: no cached value; "" an empty text, which
    openpyxl reads as None too). `values`: the file already loaded with data_only=True."""
    empty = empty_texts(path)
    formulas = openpyxl.load_workbook(path)
    values = values or openpyxl.load_workbook(path, data_only=True)
    cells = {}
    for ws in formulas.worksheets:
        shown = values[ws.title]
        areas = [parse_ref(f"A!{ref}") for ref in ws.array_formulae.values()]
        for row in ws.iter_rows():
            for c in row:
                if isinstance(c.value, str) and c.value.startswith("=") or c.data_type == "f":
                    cells[ws.title, c.row, c.column] = shown.cell(c.row, c.column).value
        for a in areas:
            for r in range(a.top, a.top + a.height):
                for col in range(a.left, a.left + a.width):
                    cells[ws.title, r, col] = shown.cell(r, col).value
    return {k: "" if v is None and k in empty else v for k, v in cells.items()}


def empty_texts(path):
    """(sheet, row, col) of the cells whose cached result is the empty text."""
    book, out = read_book(path), set()
    with zipfile.ZipFile(path) as z:
        for i, sheet in enumerate(book.sheets, 1):
            xml = z.read(f"xl/worksheets/sheet{i}.xml").decode()
            for ref in re.findall(r'<c r="([A-Z]+\d+)"[^>]* t="str">(?:<f[^>]*/>|<f[^>]*>[^<]*</f>)?<v></v>', xml):
                cell = parse_ref(f"A!{ref}")
                out.add((sheet, cell.top, cell.left))
    return out


def named(path, name, values=None):
    """A defined name's cached values, as a 2-D array. `values`: the file already loaded with data_only=True."""
    book = read_book(path)
    rect = book.names[name]
    ws = (values or openpyxl.load_workbook(path, data_only=True))[rect.sheet]
    return np.array(
        [[ws.cell(r, c).value for c in range(rect.left, rect.right + 1)] for r in range(rect.top, rect.bottom + 1)]
    )


def test_every_formula_cell_of_a_token_ids_book_shows_the_reference(tmp_path):
    tokens, want = expected("three_heads")
    path = tmp_path / "book.xlsx"
    xlgpt("build", "--weights", FIXTURES / "three_heads", "--tokens", tokens_arg(tokens), "--out", path, check=0)
    values = openpyxl.load_workbook(path, data_only=True)
    cells = formula_cells(path, values)
    assert len(cells) > 5000 and all(v is not None for v in cells.values()), [k for k, v in cells.items() if v is None][
        :5
    ]
    logits = named(path, C.LOGITS, values).astype(float)
    assert np.abs(logits - want.T).max() < 1e-5  # the reference's float64 logits vs transformers' float32
    # exactly eval's reference: the weights as the book holds them
    assert np.abs(logits - reference.logits(as_written(load(FIXTURES / "three_heads")), tokens).T).max() < 1e-12
    assert named(path, C.PREDICTIONS, values)[0].tolist() == want.argmax(1).tolist()
    p = named(path, C.PROBABILITIES, values).astype(float)
    assert np.allclose(p, reference.softmax(want).T, atol=1e-6) and np.allclose(p.sum(0), 1, atol=1e-12)


@pytest.mark.engines  # slow (~15 s): openpyxl reads every cell of a Prompt-cell book twice
def test_a_prompt_cell_book_shows_its_prediction_before_any_recalculation(tmp_path):
    path = tmp_path / "book.xlsx"
    # the bundled model and the default prompt (18 tokens, 29 characters and bytes, 5 merge rounds), in a
    # tokenizer with room to spare in every dimension (the empty rest computes too), a quarter of the default's
    xlgpt("build", "--capacity", "40,48,8", "--positions", 24, "--out", path, check=0)
    ws = openpyxl.load_workbook(path, data_only=True)
    cells = formula_cells(path, ws)
    assert all(v is not None for v in cells.values()), [k for k, v in cells.items() if v is None][:5]
    book = read_book(path)
    cell = book.names[C.PREDICTED_TOKEN]
    ckpt = load(BUNDLED)
    tok = load_tokenizer(BUNDLED)
    prompt = ws[book.names[C.PROMPT].sheet].cell(book.names[C.PROMPT].top, book.names[C.PROMPT].left).value
    want = int(reference.logits(ckpt, tok.encode(prompt))[-1].argmax())
    assert ws[cell.sheet].cell(cell.top, cell.left).value == want
    lens = named(path, C.LENS_TOP_TOKENS, ws)
    assert lens.shape[0] == ckpt.config.n_layer + 1 and lens[-1, len(tok.encode(prompt)) - 1] == want


def rewrite_cached_values(src, dst, value="7"):
    """A copy of `src` whose formulas' cached numbers all read `value` (text and errors left as they are)."""
    cached = re.compile(r'( t="n">(?:<f[^>]*>[^<]*</f>)?<v>)[^<]*(</v>)')
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.startswith("xl/worksheets/"):
                data, n = cached.subn(rf"\g<1>{value}\g<2>", data.decode())
                data = data.encode()
            zout.writestr(info, data)
    return dst


@pytest.mark.engines
def test_every_engine_recalculates_rather_than_reading_the_cached_values(tmp_path):
    tokens, _ = expected("tiny")
    path = tmp_path / "book.xlsx"
    xlgpt("build", "--weights", FIXTURES / "tiny", "--tokens", tokens_arg(tokens), "--out", path, check=0)
    forged = rewrite_cached_values(path, tmp_path / "forged.xlsx")
    assert np.all(named(forged, C.LOGITS).astype(float) == 7)
    # every engine computes the reference's numbers (it reads no cached value); the verdict is still a
    # MISMATCH: the book shows 7s before it is recalculated (eval compares the cached values too)
    run = xlgpt("eval", forged, "--engine", "all", "--json", check=1)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(results) == 4 and all(max(r["checks"].values()) < 1e-9 for r in results), run.stdout
    assert all(not r["match"] and "shows 7, its cached value" in r["cached_difference"] for r in results)


BOOKS = {  # a prompt-cell book whose tokenizer meets contractions, digits, a dash and a 2-byte letter; a training book
    "prompt": ["--prompt", "To be, or not... don't—thee's 42 ŵords", "--capacity", "fit"],
    "training": ["--prompt", "Shall I compare thee to a summer's day?", "--train", "--optimizer", "adamw"],
}


@pytest.mark.engines
@pytest.mark.parametrize("kind", BOOKS)
def test_the_cached_values_are_what_libreoffice_computes(tmp_path, kind):
    """Every cell of every block, not just the checked names: LibreOffice's recalculated values equal the cached
    ones (numbers within eval's 1e-6; texts and errors are not read back as numbers)."""
    from xlgpt.engines.libreoffice import uno_values
    from xlgpt.sheet.layout import Rect

    path = tmp_path / "book.xlsx"
    xlgpt("build", "--weights", BUNDLED, *BOOKS[kind], "--out", path, check=0)
    cells = formula_cells(path)
    assert all(v is not None for v in cells.values())
    sheets = sorted({s for s, _, _ in cells})
    extent = {s: (max(r for t, r, _ in cells if t == s), max(c for t, _, c in cells if t == s)) for s in sheets}
    _, stats = uno_values(read_book(path), [C.LOGITS], more=lambda _: [Rect(s, 1, 1, *extent[s]) for s in sheets])
    computed = dict(zip(sheets, stats["more"]))
    compared, differ = 0, []
    for (sheet, r, c), cached in cells.items():
        if isinstance(cached, (int, float)) and not isinstance(cached, bool):
            got = computed[sheet][r - 1, c - 1]
            if not abs(got - cached) <= 1e-6 * max(1, abs(got)):  # eval's tolerance
                differ.append((sheet, r, c, got, cached))
            compared += 1
    assert compared > 0.9 * len(cells)  # the rest: token texts and the sampler's #DIV/0! at Temperature 0
    # one exception: the sampler's count of ties at the k-th (here the smallest) logit. Untrained byte tokens
    # have logits equal up to rounding, and which of them are exactly equal differs between the reference and
    # an engine; nothing else depends on the count while TopK keeps every token
    assert {(sheet, c) for sheet, _, c, _, _ in differ} <= {("Output", 3)}, differ[:5]
    assert all(got == int(got) for *_, got, _ in differ)
