"""LibreOffice as an engine: a headless CSV export of one sheet, or the UNO bridge (a LibreOfficeSession)."""

import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from xlgpt.engines.process import C_LOCALE, as_float, find_soffice, peak_memory, peak_rss_mb, run_group
from xlgpt.engines.session import LibreOfficeSession, system_python
from xlgpt.package import XlgptError
from xlgpt.safefile import announce

# The temporary profile's settings: recalculate every formula on load. A book set to manual calculation turns
# LibreOffice's automatic calculation off, and without this its cells would be exported half computed.
ALWAYS_RECALCULATE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
    'xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    + "".join(
        f'<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="{key}" oor:op="fuse">'
        f"<value>0</value></prop></item>"
        for key in ("OOXMLRecalcMode", "ODFRecalcMode")
    )
    + "</oor:items>\n"
)


def soffice_csv(paths, sheet_index, timeout=3600):
    """Recalculate books in ONE headless LibreOffice run (one start-up, its own temporary profile) and
    return each book's sheet `sheet_index` (1-based) as a CSV grid: a list of rows of strings."""
    exe = find_soffice()
    with tempfile.TemporaryDirectory(prefix="xlgpt-lo-") as tmp:
        tmp = Path(tmp)
        (tmp / "profile" / "user").mkdir(parents=True)
        (tmp / "profile" / "user" / "registrymodifications.xcu").write_text(ALWAYS_RECALCULATE)
        sources = []
        for i, path in enumerate(paths):
            sources.append(tmp / f"book{i}.xlsx")
            os.symlink(Path(path).resolve(), sources[-1])
        opts = f"44,34,76,1,,0,false,true,false,false,false,{sheet_index}"
        cmd = [
            exe,
            f"-env:UserInstallation=file://{tmp / 'profile'}",
            "--headless",
            "--calc",
            "--convert-to",
            f"csv:Text - txt - csv (StarCalc):{opts}",
            *map(str, sources),
            "--outdir",
            str(tmp / "out"),
        ]
        announce("engine")  # run_group starts soffice next, and waits for it
        run = run_group(
            cmd,
            timeout,
            "LibreOffice",
            cwd=tmp,
            # its scratch files (lu*.tmp) go into our directory, removed even if soffice is killed
            env={**os.environ, **C_LOCALE, "SAL_ENABLE_FILE_LOCKING": "0", "TMPDIR": str(tmp)},
        )
        grids = []
        for source, path in zip(sources, paths):
            # <stem>-<sheet>.csv, or <stem>.csv for a one-sheet book
            found = sorted((tmp / "out").glob(source.stem + "-*.csv")) + sorted(
                (tmp / "out").glob(source.stem + ".csv")
            )
            if not found:
                raise XlgptError(
                    f"LibreOffice could not convert {Path(path).name}: "
                    f"{(run.stderr or run.stdout).strip().splitlines()[-1:] or 'no output'}"
                )
            with open(found[0], newline="", encoding="utf-8") as f:
                grids.append(list(csv.reader(f)))
        return grids


def uno_values(book, wanted, timeout=3600, more=None):
    """Recalculate with LibreOffice through its UNO bridge (a LibreOfficeSession: load, which calculates
    every formula, then read the names, on any sheets; and `more`'s Rects, as "Sheet.A1:B2" ranges)."""

    t0 = time.perf_counter()
    with LibreOfficeSession(timeout=timeout) as lo:
        opened = lo.open(book.path)
        values = opened.read(wanted)
        stats = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": max(peak_rss_mb(), lo.peak_rss_mb())}
        if more is not None:
            stats["more"] = opened.read_rects(more(values))
    return values, stats


def uno_available():

    try:
        system_python()
        return True
    except XlgptError:
        return False


def libreoffice_values(book, wanted, timeout=3600, via=None, more=None):
    """Recalculate with headless LibreOffice and read the names: through the UNO bridge when it is installed
    (or the names span several sheets), else by a CSV export of the one sheet holding them (without `more`).
    via: "uno" or "csv" to choose."""
    sheets = {book.names[n].sheet for n in wanted}
    if via is None:
        via = "uno" if len(sheets) != 1 or uno_available() else "csv"
    if via == "uno":
        return uno_values(book, wanted, timeout, more)
    if len(sheets) != 1:
        raise XlgptError("the results must sit on one sheet for LibreOffice's CSV export")
    with peak_memory() as stats:
        grid = soffice_csv([book.path], book.sheets.index(sheets.pop()) + 1, timeout)[0]
    out = {}
    for name in wanted:
        cell = lambda r, c: as_float(grid[r - 1][c - 1] if r <= len(grid) and c <= len(grid[r - 1]) else None)
        out[name] = np.array(book.names[name].read(cell))
    return out, stats
