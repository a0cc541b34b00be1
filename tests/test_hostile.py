"""Hostile input and hostile environments: nothing destroyed, nothing wrong, nothing left behind.

Grouped by kind: locale, inputs destroyed, temporary files, books xlgpt wrote, forged books, resources
without bounds, interrupted work, one line instead of a traceback, smaller cases."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import FIXTURES, ROOT, assert_clean_error, xlgpt

TINY = FIXTURES / "tiny"


def build_tiny(tmp_path, *args, name="book.xlsx"):
    out = tmp_path / name
    xlgpt("build", "--weights", TINY, "--tokens", "1,2,3", "--out", out, *args, check=0)
    return out


# --- 1. a locale with a decimal comma --------------------------------------------------------------------

LOCALES = ["de_DE.UTF-8", "tr_TR.UTF-8"]  # a decimal comma; a dotless i. Neither need be installed.


@pytest.mark.engines
@pytest.mark.parametrize("lang", LOCALES)
def test_eval_verdict_does_not_depend_on_the_locale(tmp_path, lang):
    book = build_tiny(tmp_path)
    run = xlgpt("eval", book, "--engine", "all", env={"LC_ALL": lang, "LANG": lang})
    assert run.returncode == 0 and run.stdout.count("MATCH") == 3, (run.stdout, run.stderr)


@pytest.mark.engines
@pytest.mark.parametrize("lang", LOCALES)
def test_libreoffice_csv_export_does_not_depend_on_the_locale(tmp_path, lang, monkeypatch):
    """LibreOffice's CSV export writes "1,5" in a decimal-comma locale (installed or not), read back as NaN:
    the export runs in the C locale."""
    import numpy as np

    from xlgpt import contract as C
    from xlgpt.check.engines import libreoffice_values
    from xlgpt.check.verify import reference_for

    book = C.read_book(build_tiny(tmp_path))
    monkeypatch.setenv("LC_ALL", lang)
    monkeypatch.setenv("LANG", lang)
    values, _ = libreoffice_values(book, [C.LOGITS], via="csv")
    _, want = reference_for(book)
    assert np.abs(values[C.LOGITS] - want[C.LOGITS]).max() < 1e-6
