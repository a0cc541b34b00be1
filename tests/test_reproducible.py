"""A built book names its checkpoint as --weights did, never by the builder's absolute path: the same
default book comes out of any clone, run from any folder, and eval finds the checkpoint again."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import assert_clean_error, xlgpt
from xlgpt.sheet.read import read_book

ROOT = Path(__file__).resolve().parent.parent


def run_xlgpt(package_root, cwd, *args):
    """The CLI of the xlgpt package under `package_root`, run in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "xlgpt", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(package_root)},
    )


def unzipped(path):
    with zipfile.ZipFile(path) as zf:
        return b"".join(zf.read(name) for name in zf.namelist())


@pytest.mark.engines  # slow, end to end: two copies of the package, each building the default book in a fresh process
def test_two_clones_build_the_same_default_book(tmp_path):
    books = []
    for clone in ("one", "two"):
        root = tmp_path / clone / "xlgpt-checkout"
        for folder in ("xlgpt", "templates", "weights"):
            shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
        cwd = tmp_path / clone / "work"
        cwd.mkdir()
        found = subprocess.run(
            [sys.executable, "-c", "from xlgpt.package import shipped; print(shipped('weights'))"],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert found.stdout.strip() == str(root / "weights")  # this clone's package and data, not another's
        run = run_xlgpt(root, cwd, "build", "--out", "book.xlsx")
        assert run.returncode == 0, run.stderr
        books.append(cwd / "book.xlsx")
    assert books[0].read_bytes() == books[1].read_bytes()
    content = unzipped(books[0])
    for path in (ROOT, tmp_path, Path.home()):
        assert str(path).encode() not in content
    assert read_book(books[0]).about.checkpoint == "shakespeare"  # the bundled model, by name


def test_a_directory_is_recorded_as_given(tmp_path, small_ckpt, monkeypatch):
    """--weights models/small stays relative: eval from the same folder finds it; from elsewhere it says to
    pass --weights, and does so cleanly."""
    shutil.copytree(small_ckpt, tmp_path / "models" / "small")
    monkeypatch.chdir(tmp_path)
    xlgpt("build", "--weights", "models/small", "--tokens", "1,2,3", "--out", "book.xlsx", check=0)
    book = tmp_path / "book.xlsx"
    assert read_book(book).about.checkpoint == "models/small"
    assert str(tmp_path).encode() not in unzipped(book)
    xlgpt("eval", "book.xlsx", "--engine", "ironcalc", check=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert_clean_error(xlgpt("eval", book, "--engine", "formulas"), "built with --weights 'models/small'")
    xlgpt("eval", book, "--engine", "ironcalc", "--weights", tmp_path / "models" / "small", check=0)
