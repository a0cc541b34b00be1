"""The fast streaming writer against an openpyxl oracle writing the same blocks, at reduced size."""

import csv
import re
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import openpyxl
import pytest

import openpyxl_writer
from helpers import FIXTURES, expected
from xlgpt.compile.inputs import TokenIds
from xlgpt.compile.lower import lower
from xlgpt.compile.template import load_spec
from xlgpt.engines.formulas import formulas_values
from xlgpt.engines.process import find_soffice
from xlgpt.model.checkpoint import load
from xlgpt.sheet import cells as sheet_cells
from xlgpt.sheet import deflate
from xlgpt.sheet import writer as xlsx
from xlgpt.sheet.contract import About
from xlgpt.sheet.read import read_book
from xlgpt.tokenizer.tables import display


@pytest.fixture(scope="module")
def plan():
    ckpt = load(FIXTURES / "three_heads")
    tokens, _ = expected("three_heads")
    vocab = [display(f"tok{i} ") for i in range(ckpt.config.vocab_size)]
    book, names = lower(load_spec(ckpt.config), ckpt, TokenIds(tokens), About("three_heads", "-"), vocab, values=False)
    return book.sheets(), names


@pytest.fixture(scope="module")
def books(plan, tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    xlsx.write_workbook(d / "fast.xlsx", *plan)
    openpyxl_writer.write(d / "oracle.xlsx", *plan)
    return d / "fast.xlsx", d / "oracle.xlsx"


def cells(path):
    wb = openpyxl.load_workbook(path)
    out = {}
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for c in row:
                v = c.value
                if hasattr(v, "text"):
                    v = ("array", v.ref, v.text)
                if v is not None:
                    out[ws.title, c.coordinate] = v
    return (
        wb.sheetnames,
        {k: v.attr_text for k, v in wb.defined_names.items()},
        {ws.title: ws.freeze_panes for ws in wb.worksheets},
        out,
    )


def test_openpyxl_reads_back_the_same_cells(books):
    fast, oracle = cells(books[0]), cells(books[1])
    assert fast[0] == oracle[0] and fast[1] == oracle[1] and fast[2] == oracle[2]
    assert len(fast[3]) > 10_000
    assert fast[3] == oracle[3]


def libreoffice_csvs(path):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                find_soffice(),
                f"-env:UserInstallation=file://{tmp}/profile",
                "--headless",
                "--calc",
                "--convert-to",
                "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1",
                str(path),
                "--outdir",
                tmp,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        return {p.name.split("-", 1)[1]: as_values(p.read_text()) for p in Path(tmp).glob("*.csv")}


def as_values(text):
    """A CSV export's cells with number formats undone: LibreOffice writes a percentage as one (fewer digits,
    and its sign), and the fast writer formats probabilities as percentages while the oracle writes no number
    formats; numbers are compared to 10 significant digits."""
    number = re.compile(r"^(-?[0-9.]+(?:E[-+]?[0-9]+)?)(%?)$")

    def value(cell):
        m = number.match(cell)
        return f"{float(m.group(1)) / (100 if m.group(2) else 1):.10g}" if m else cell

    return [[value(cell) for cell in row] for row in csv.reader(text.splitlines())]


@pytest.mark.engines
def test_libreoffice_recalculates_both_identically(plan, books):
    fast, oracle = libreoffice_csvs(books[0]), libreoffice_csvs(books[1])
    assert len(fast) == len(plan[0]) > 9 and fast == oracle
    assert "#VALUE" not in fast["Output.csv"] and "Err:" not in fast["Output.csv"]


@pytest.mark.engines
def test_formulas_recalculates_both_identically(books):
    a, _ = formulas_values(read_book(books[0]), ["Logits", "Predictions"])
    b, _ = formulas_values(read_book(books[1]), ["Logits", "Predictions"])
    assert np.isfinite(a["Logits"]).all()
    assert np.array_equal(a["Logits"], b["Logits"]) and np.array_equal(a["Predictions"], b["Predictions"])


def test_parallel_writer_writes_the_same_bytes(plan, books, tmp_path, monkeypatch):
    monkeypatch.setattr(xlsx, "PARALLEL_CELLS", 0)  # force worker processes at this small size
    monkeypatch.setattr(xlsx.os, "cpu_count", lambda: 2)  # even on a one-core machine
    # and many small chunks (Sheet.chunks took CHUNK_CELLS as a default argument: patching the constant did nothing)
    chunks = sheet_cells.Sheet.chunks
    monkeypatch.setattr(sheet_cells.Sheet, "chunks", lambda self, cells=300: chunks(self, cells))
    contexts = []
    get_context = xlsx.multiprocessing.get_context
    monkeypatch.setattr(
        xlsx.multiprocessing, "get_context", lambda method: contexts.append(method) or get_context(method)
    )
    written = []
    xlsx.write_workbook(tmp_path / "parallel.xlsx", *plan, progress=lambda sheet, row: written.append(sheet.name))
    assert contexts == ["fork"]  # a pool of workers formatted the chunks
    sheets = plan[0]
    assert len(written) == sum(len(chunks(s, 300)) for s in sheets) > 4 * len(sheets)
    # the same parts (each deflated in other pieces: other bytes), each whole (its CRC-32 combined from the pieces')
    with zipfile.ZipFile(tmp_path / "parallel.xlsx") as parallel, zipfile.ZipFile(books[0]) as one:
        assert parallel.testzip() is None and one.testzip() is None
        assert parallel.namelist() == one.namelist()
        assert all(parallel.read(name) == one.read(name) for name in one.namelist())


def test_interrupted_write_leaves_nothing(plan, tmp_path):
    def stop(sheet, rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        xlsx.write_workbook(tmp_path / "b.xlsx", *plan, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_pieces_deflated_apart_make_one_stream():
    """What the workers send: deflated pieces, one after the other, inflate to the whole, and their CRC-32s combine
    into the whole's (checked against zlib's own)."""
    rng = np.random.default_rng(3)
    pieces = [rng.integers(0, 256, n, np.uint8).tobytes() * k for n, k in ((0, 1), (1, 1), (5000, 3), (70000, 2))]
    deflated = [deflate.deflated(p, small) for p, small in zip(pieces, (False, True, False, True))]
    whole = b"".join(pieces)
    assert zlib.decompress(b"".join(d for d, _, _ in deflated) + deflate.FINAL_BLOCK, -15) == whole
    crc = 0
    for _, piece_crc, length in deflated:
        crc = deflate.crc32_combine(crc, piece_crc, length)
    assert crc == zlib.crc32(whole)
