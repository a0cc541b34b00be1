"""Gnumeric as an engine: ssconvert --recalc, every sheet exported as CSV."""

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from xlgpt.engines.process import C_LOCALE, as_float, peak_memory
from xlgpt.package import XlgptError
from xlgpt.safefile import announce


def find_ssconvert():
    exe = shutil.which("ssconvert")
    if not exe:
        raise XlgptError(
            "Gnumeric is not installed (no 'ssconvert' on PATH); install it, e.g. "
            "apt-get install --no-install-recommends gnumeric, or use another --engine"
        )
    return exe


def ssconvert_csv(path, sheets, order, timeout=3600):
    """Recalculate a book with Gnumeric's ssconvert and return the named sheets as CSV grids {name: grid}
    (`order`: the book's sheet names, in order)."""
    with ssconvert_export(path, order, timeout) as grid:
        return {sheet: grid(sheet) for sheet in sheets}


@contextlib.contextmanager
def ssconvert_export(path, order, timeout=3600):
    """Recalculate a book with Gnumeric's ssconvert; yields grid(sheet name): that sheet as a CSV grid (a list
    of rows of strings), read while the export lasts (`order`: the book's sheet names, in order).

    Raw values (full precision, not the cells' display format), C locale, its own process group (killed
    whole on timeout or interruption) and a temporary HOME, so nothing of the user's settings is read or
    written. Every sheet is exported in one run (a run recalculates the whole book); only those asked for
    are read."""
    exe = find_ssconvert()
    with tempfile.TemporaryDirectory(prefix="xlgpt-gnumeric-") as tmp:
        tmp = Path(tmp)
        cmd = [
            exe,
            "--recalc",
            "-S",
            "--export-type=Gnumeric_stf:stf_assistant",
            "--export-options=format=raw separator=, eol=unix",
            str(Path(path).resolve()),
            str(tmp / "out-%n.csv"),
        ]
        env = {**os.environ, **C_LOCALE, "HOME": str(tmp)}
        run = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp, start_new_session=True
        )
        try:
            announce("engine")
            log, _ = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
            raise XlgptError(f"Gnumeric did not finish within {timeout} s")
        finally:
            if run.poll() is None:  # interrupted (Ctrl-C): take the whole group down with us
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()

        def grid(sheet):
            out = tmp / f"out-{order.index(sheet)}.csv"
            if run.returncode != 0 or not out.is_file():
                last = [line for line in (log or "").splitlines() if line.strip()][-1:]
                raise XlgptError(
                    f"Gnumeric could not convert {Path(path).name}: "
                    f"{last[0] if last else f'exit status {run.returncode}'}"
                )
            with open(out, newline="", encoding="utf-8") as f:
                return list(csv.reader(f))

        yield grid


def gnumeric_values(book, wanted, timeout=3600, more=None):
    """Recalculate with Gnumeric (ssconvert --recalc, a CSV export per sheet) and read the names (and
    `more`'s Rects, from the same export)."""
    grids = {}

    def read(rect):
        if rect.sheet not in grids:
            grids[rect.sheet] = sheet_grid(rect.sheet)
        grid = grids[rect.sheet]
        cell = lambda r, c: as_float(grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None)
        return np.array(rect.read(cell), dtype=float)

    with contextlib.ExitStack() as export:
        with peak_memory() as stats:
            sheet_grid = export.enter_context(ssconvert_export(book.path, book.sheets, timeout))
            out = {name: read(book.names[name]) for name in wanted}
        if more is not None:  # from the same export, still on disk
            stats["more"] = [read(rect) for rect in more(out)]
    return out, stats
