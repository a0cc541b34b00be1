"""The workbook's calculation mode (build --calc auto|manual; by default manual for big books): workbook.xml's
calcPr, the Guide's line, the About cell, and engines that still recalculate a manual book."""

import re
import zipfile

import openpyxl
import pytest

from helpers import assert_clean_error, xlgpt
from xlgpt.compile.build import build, inputs_for
from xlgpt.compile.guide import MANUAL_CALCULATION
from xlgpt.compile.lower import calculation_for, lower
from xlgpt.compile.template import load_spec
from xlgpt.model.checkpoint import load
from xlgpt.sheet import contract
from xlgpt.sheet.contract import About
from xlgpt.sheet.read import read_book

AUTO_PR = '<calcPr calcId="191029" fullCalcOnLoad="1"/>'
MANUAL_PR = '<calcPr calcId="191029" calcMode="manual" calcOnSave="0"/>'


def calc_pr(path):
    with zipfile.ZipFile(path) as zf:
        return re.search(r"<calcPr[^>]*>", zf.read("xl/workbook.xml").decode()).group()


def guide_text(path):
    """The Guide's text as one line (its notes wrap over rows)."""
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return " ".join(v.strip() for row in wb["Guide"].iter_rows(values_only=True) for v in row if isinstance(v, str))
    finally:
        wb.close()


def built(tmp_path, small_ckpt, *options):
    out = tmp_path / "book.xlsx"
    xlgpt("build", "--weights", small_ckpt, "--tokens", "1,2,3", "--out", out, *options, check=0)
    return out


@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_calc_option_sets_the_mode(tmp_path, small_ckpt, mode):
    book = built(tmp_path, small_ckpt, "--calc", mode)
    assert calc_pr(book) == (MANUAL_PR if mode == "manual" else AUTO_PR)
    assert (MANUAL_CALCULATION in guide_text(book)) == (mode == "manual")
    info = read_book(book)
    assert info.about.calculation == mode
    assert (contract.CALCULATION in info.names) == (mode == "manual")  # an auto book is as it always was


def test_a_small_book_is_automatic_by_default(tmp_path, small_ckpt):
    book = built(tmp_path, small_ckpt)
    assert calc_pr(book) == AUTO_PR and MANUAL_CALCULATION not in guide_text(book)


def test_the_default_turns_manual_above_the_threshold(tmp_path, small_ckpt, monkeypatch):
    ckpt = load(small_ckpt)
    book, _ = lower(load_spec(ckpt.config), ckpt, inputs_for(ckpt, [1, 2, 3]), About("small", "-", calculation="auto"))
    n = sum(sheet.cell_counts()[1] for sheet in book.sheets())
    monkeypatch.setattr(contract, "MANUAL_ABOVE", n)
    assert calculation_for(book) == "auto"
    monkeypatch.setattr(contract, "MANUAL_ABOVE", n - 1)
    assert calculation_for(book) == "manual"
    # build itself, with no --calc: a book over the threshold is manual, with the Guide's line
    monkeypatch.setattr(contract, "MANUAL_ABOVE", 0)
    out = tmp_path / "big.xlsx"
    build(ckpt, [1, 2, 3], out)
    assert calc_pr(out) == MANUAL_PR and MANUAL_CALCULATION in guide_text(out)
    assert read_book(out).about.calculation == "manual"


def test_a_bad_calc_value_is_one_line(tmp_path, small_ckpt):
    out = tmp_path / "book.xlsx"
    run = xlgpt("build", "--weights", small_ckpt, "--tokens", "1", "--calc", "sometimes", "--out", out)
    assert_clean_error(run, "--calc", "'sometimes' is not one of 'auto', 'manual'")
    assert not out.exists()


@pytest.mark.engines
def test_every_engine_recalculates_a_manual_book(tmp_path, small_ckpt):
    """LibreOffice turns automatic calculation off for a manual book; eval still computes every cell (and
    the recompiled book, read back with its mode, is the compiler's)."""
    book = built(tmp_path, small_ckpt, "--calc", "manual")
    run = xlgpt("eval", book, "--engine", "all", check=0)
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 4 and all("MATCH" in line and "MISMATCH" not in line for line in lines), run.stdout


@pytest.mark.engines
def test_libreoffice_csv_export_recalculates_a_manual_book(tmp_path, small_ckpt):
    """Without the UNO bridge, eval exports CSV from soffice; its profile must force a full recalculation."""
    import numpy as np

    from xlgpt.engines.libreoffice import libreoffice_values

    values = {}
    for mode in ("manual", "auto"):
        (tmp_path / mode).mkdir()
        book = read_book(built(tmp_path / mode, small_ckpt, "--calc", mode))
        values[mode], _ = libreoffice_values(book, ["Logits", "Predictions"], via="csv")
    for name in ("Logits", "Predictions"):
        assert not np.isnan(values["manual"][name]).any()
        np.testing.assert_array_equal(values["manual"][name], values["auto"][name])
