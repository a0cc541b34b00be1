"""Render chosen areas of a workbook to PNG with headless LibreOffice (PDF export, then pdftoppm), for the
README. Dev tool: needs LibreOffice and poppler-utils (pdftoppm).

    python tools/screenshots.py BOOK OUTDIR NAME=SHEET!A1:P40 [NAME=SHEET!RANGE ...]

Each NAME gives OUTDIR/NAME.png: the first page of that area, gridlines and headings shown, fitted to the
page width."""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import openpyxl
from openpyxl.worksheet.page import PageMargins


def render(book, outdir, name, sheet, area, tmp):
    wb = openpyxl.load_workbook(book)
    for ws in wb.worksheets:
        ws.sheet_state = "visible" if ws.title == sheet else "hidden"
    ws = wb[sheet]
    wb.active = wb.sheetnames.index(sheet)
    ws.print_area = area
    if ws.freeze_panes:  # the frozen header (positions, tokens) on every page, as on screen
        ws.print_title_rows = f"1:{openpyxl.utils.cell.coordinate_from_string(ws.freeze_panes)[1] - 1}"
    ws.print_options.gridLines = ws.print_options.headings = True
    ws.page_setup.orientation, ws.page_setup.paperSize = "landscape", 8  # A3
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
    ws.page_margins = PageMargins(left=0.2, right=0.2, top=0.2, bottom=0.2)
    source = tmp / f"{name}.xlsx"
    wb.save(source)
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation=file://{tmp / 'profile'}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(tmp),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "90",
            "-png",
            "-singlefile",
            "-f",
            "1",
            "-l",
            "1",
            str(tmp / f"{name}.pdf"),
            str(Path(outdir) / name),
        ],
        check=True,
    )


def main(book, outdir, *specs):
    Path(outdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xlgpt-shots-") as tmp:
        for spec in specs:
            name, _, where = spec.partition("=")
            sheet, _, area = where.partition("!")
            render(book, outdir, name, sheet, area, Path(tmp))
            print(Path(outdir) / f"{name}.png")


if __name__ == "__main__":
    if len(sys.argv) < 4 or not shutil.which("pdftoppm"):
        sys.exit(__doc__)
    main(*sys.argv[1:])
