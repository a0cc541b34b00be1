"""What a tokenizer book shows when an engine recalculates it: the sheet as a tokenizer."""

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import openpyxl

from xlgpt.engines.rects import read_rects
from xlgpt.package import XlgptError
from xlgpt.sheet.contract import SHEET_TOKEN_COUNT, SHEET_TOKEN_IDS, TOKENIZER_STATUS, numbered
from xlgpt.sheet.read import read_names
from xlgpt.tokenizer.tabs import write_batch_book


@dataclass
class SheetResult:
    """What a recalculated sheet shows for one prompt."""

    status: str
    count: object  # an int when the status is "ok", else ""
    ids: list  # the token ids shown, up to the first empty cell

    @property
    def ok(self):
        return self.status == "ok"


@dataclass(frozen=True)
class Block:
    """Where one prompt's results sit: status, count and the row of token-id cells (one sheet)."""

    status: object
    count: object
    ids: object


def book_blocks(path):
    """The Blocks of a tokenizer book, from its defined names (one for a single-prompt book, else one per
    numbered prompt of a batch book)."""

    try:
        wb = openpyxl.load_workbook(path, read_only=True)
    except Exception as e:
        raise XlgptError(f"{path}: not an .xlsx workbook ({e})")
    try:
        names = read_names(wb)
    finally:
        wb.close()
    outputs = (TOKENIZER_STATUS, SHEET_TOKEN_COUNT, SHEET_TOKEN_IDS)
    keys = (
        [lambda n: n]
        if SHEET_TOKEN_IDS in names
        else [
            lambda n, i=i: numbered(n, i)
            for i in range(1, 1 + sum(bool(re.fullmatch(SHEET_TOKEN_IDS + r"_\d+", n)) for n in names))
        ]
    )
    blocks = []
    for name in keys or [lambda n: n]:
        missing = [name(n) for n in outputs if name(n) not in names]
        if missing:
            raise XlgptError(f"{path}: not a tokenizer workbook (no defined name {missing[0]})")
        blocks.append(Block(*(names[name(n)] for n in outputs)))
    return blocks


def _result(status, count, ids):
    status, count = status[0][0], count[0][0]
    shown = []
    for v in ids[0]:
        if v in (None, ""):
            break
        try:
            shown.append(int(float(v)))
        except (TypeError, ValueError):
            shown.append(str(v))  # an error value: shown as such, never as a token id
    try:
        count = int(float(count))
    except (TypeError, ValueError):
        count = "" if count is None else count
    return SheetResult("" if status is None else str(status), count, shown)


def evaluate_books(books, engine="libreoffice", timeout=3600):
    """Recalculate tokenizer books and read what they show: `books` is a list of paths; returns one list
    of SheetResult (one per prompt) per book."""
    blocks = [book_blocks(p) for p in books]
    values = read_rects(
        [(p, [r for b in bl for r in (b.status, b.count, b.ids)]) for p, bl in zip(books, blocks)], engine, timeout
    )
    return [[_result(*v[3 * i : 3 * i + 3]) for i in range(len(bl))] for v, bl in zip(values, blocks)]


def evaluate_tokens(path, engine="libreoffice", timeout=3600):
    """The token ids a single-prompt book computes with `engine`; XlgptError with the sheet's own
    message when its status is not "ok"."""
    result = evaluate_books([path], engine, timeout)[0][0]
    if not result.ok:
        raise XlgptError(f"{Path(path).name}: the sheet says: {result.status}")
    return result.ids


def tokenize_with_sheets(tok, texts, engine="libreoffice", directory=None, per_book=40):
    """Tokenize many texts with the sheet itself (capacity sized to each text): batch books of `per_book`
    prompts, recalculated by `engine` (one LibreOffice run for all of them). One SheetResult per text."""
    texts = list(texts)
    with tempfile.TemporaryDirectory(prefix="xlgpt-tok-") as tmp:
        directory = Path(directory or tmp)
        books = [
            write_batch_book(directory / f"tokenizer-batch-{i // per_book}.xlsx", tok, texts[i : i + per_book])
            for i in range(0, len(texts), per_book)
        ]
        return [r for rs in evaluate_books(books, engine) for r in rs]
