"""Install xlgpt from a wheel into a fresh virtual environment and use it from an unrelated folder: the
templates and bundled weights must come with it. Slow (builds a wheel, installs the dependencies from the
package index, runs LibreOffice): marked `engines`."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ("templates", "weights")  # top-level folders installed as xlgpt/data/<folder>

pytestmark = pytest.mark.engines


def run(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done


def shipped_files():
    return sorted(
        str(p.relative_to(ROOT))
        for folder in DATA
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (so the build leaves nothing in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("xlgpt", *DATA):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", src, "-w", tmp / "dist", "--no-deps", "-q")
    (found,) = (tmp / "dist").glob("xlgpt-*.whl")
    return found


def test_wheel_holds_the_data_and_nothing_stray(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.removeprefix("xlgpt/data/") for n in names if n.startswith("xlgpt/data/")) == shipped_files()
    packaged = [n for n in names if not n.startswith("xlgpt/data/") and ".dist-info/" not in n]
    expected = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "xlgpt").rglob("*.py"))
    assert sorted(packaged) == expected  # the code, no tests, no caches
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: httpx2" in metadata


@pytest.mark.skipif(not (shutil.which("soffice") or shutil.which("libreoffice")), reason="LibreOffice is not installed")
def test_installed_wheel_builds_and_verifies_from_anywhere(wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = run(
        venv / "bin" / "python",
        "-c",
        "import xlgpt, xlgpt.package; print(xlgpt.__file__, xlgpt.package.shipped('weights'))",
        cwd=cwd,
    ).stdout.split()
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert Path(where[0]).is_relative_to(site) and Path(where[1]) == site / "xlgpt" / "data" / "weights"
    run(venv / "bin" / "xlgpt", "build", "--out", "X.xlsx", cwd=cwd)
    result = json.loads(
        run(venv / "bin" / "xlgpt", "eval", "X.xlsx", "--engine", "libreoffice", "--json", cwd=cwd).stdout
    )
    assert result["match"] is True and result["prompt"] == "O Romeo, Romeo, wherefore art"
