"""Line charts: a small book with a loss column (numbers) and a smoothed column (formulas), charted from another
tab, checked by the OOXML validator, by its package structure, and by LibreOffice and Gnumeric keeping the charts."""

import posixpath
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest

from helpers import assert_valid_ooxml
from xlgpt.engines.process import find_soffice
from xlgpt.sheet.layout import Book, Rect, Tab
from xlgpt.sheet.writer import write_workbook

C = "{http://schemas.openxmlformats.org/drawingml/2006/chart}"
STEPS = 12
LOSS = 4 * np.exp(-np.arange(STEPS) / 4) + 0.5
SMOOTH = np.convolve(LOSS, [0.5, 0.5])[1:STEPS]  # the mean of each step and the one before (from step 1)
RANGES = [
    ("'Loss data'!$C$3:$C$14", "'Loss data'!$D$3:$D$14"),  # loss, numbers
    ("'Loss data'!$C$4:$C$14", "'Loss data'!$E$4:$E$14"),
]  # smoothed loss, formulas


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    b = Book()
    data = b.add(Tab("Loss data", "Training log", "tables"))
    log = data.block([(None, i) for i in range(STEPS)], 3, title="step, loss, smoothed")
    steps, loss, smooth = log.col(0).rows(0, STEPS), log.col(1), log.col(2).rows(1, STEPS)
    data.numbers(steps, np.arange(STEPS)[:, None] * 100)
    data.numbers(loss, LOSS[:, None])
    data.each(smooth, "AVERAGE({a},{b})", a=lambda i, j: loss.cell(i, 0), b=lambda i, j: loss.cell(i + 1, 0))
    charts = b.add(Tab("Charts", "Loss curve", "guide"))
    charts.chart(
        "Training loss",
        steps,
        loss,
        Rect("Charts", 3, 2, 20, 8),
        x_title="step",
        y_title="loss",
        series_name="loss",
        cache=LOSS,
    )
    charts.chart(
        "Smoothed loss",
        steps.rows(1, STEPS),
        smooth,
        Rect("Charts", 24, 2, 20, 8),
        x_title="step",
        y_title="mean of two steps",
    )
    path = tmp_path_factory.mktemp("chart") / "chart.xlsx"
    write_workbook(path, b.sheets(), {})
    return path


def chart_refs(path):
    """{chart part: [(categories, values)]} of a book, the references unescaped."""
    with zipfile.ZipFile(path) as zf:
        out = {}
        for name in sorted(n for n in zf.namelist() if n.startswith("xl/charts/chart")):
            root = ET.fromstring(zf.read(name))
            out[name] = [
                (ser.find(f"{C}cat//{C}f").text, ser.find(f"{C}val//{C}f").text) for ser in root.iter(f"{C}ser")
            ]
        return out


def test_the_charts_parts_and_their_references(book):
    assert chart_refs(book) == {"xl/charts/chart1.xml": [RANGES[0]], "xl/charts/chart2.xml": [RANGES[1]]}
    with zipfile.ZipFile(book) as zf:
        chart = ET.fromstring(zf.read("xl/charts/chart1.xml"))
        assert chart.find(f".//{C}lineChart") is not None
        titles = ["".join(t.itertext()) for t in chart.iter(f"{C}title")]
        assert titles == ["Training loss", "step", "loss"]
        cached = [float(v.text) for v in chart.find(f".//{C}val//{C}numCache").iter(f"{C}v")]
        assert np.allclose(cached, LOSS)
        sheet = zf.read("xl/worksheets/sheet1.xml").decode()
        assert sheet.endswith('</sheetData><drawing r:id="rId1"/></worksheet>')
        drawing = zf.read("xl/drawings/drawing1.xml").decode()
        assert drawing.count("<xdr:twoCellAnchor>") == 2  # both charts in the Charts tab's one drawing
        # the first covers B3:I22: markers are 0-based, the end marker is the cell just past the area
        assert "<xdr:from><xdr:col>1</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>2</xdr:row>" in drawing
        assert "<xdr:to><xdr:col>9</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>22</xdr:row>" in drawing
        assert "drawing" not in zf.read("xl/worksheets/sheet2.xml").decode()


def test_package_structure_resolves(book):
    """Every part has a content type, every override names a part, every relationship target exists."""
    with zipfile.ZipFile(book) as zf:
        names = set(zf.namelist())
        types = ET.fromstring(zf.read("[Content_Types].xml"))
        ns = "{http://schemas.openxmlformats.org/package/2006/content-types}"
        defaults = {d.get("Extension") for d in types.iter(f"{ns}Default")}
        overrides = {o.get("PartName").lstrip("/"): o.get("ContentType") for o in types.iter(f"{ns}Override")}
        assert set(overrides) <= names
        assert all(n in overrides or n.rsplit(".", 1)[-1] in defaults for n in names if n != "[Content_Types].xml")
        assert overrides["xl/charts/chart2.xml"].endswith("drawingml.chart+xml")
        assert overrides["xl/drawings/drawing1.xml"].endswith("drawing+xml")
        rel = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
        targets = set()
        for name in (n for n in names if n.endswith(".rels")):
            source_dir = posixpath.dirname(posixpath.dirname(name))  # xl/drawings/_rels/x.rels -> xl/drawings
            for r in ET.fromstring(zf.read(name)).iter(rel):
                target = posixpath.normpath(posixpath.join(source_dir, r.get("Target")))
                assert target in names, (name, r.get("Target"))
                targets.add(target)
        assert {"xl/drawings/drawing1.xml", "xl/charts/chart1.xml", "xl/charts/chart2.xml"} <= targets


def test_a_book_without_charts_has_no_chart_parts(tmp_path):
    b = Book()
    b.add(Tab("Plain", "No chart", "tables"))
    write_workbook(tmp_path / "plain.xlsx", b.sheets(), {})
    with zipfile.ZipFile(tmp_path / "plain.xlsx") as zf:
        assert not [n for n in zf.namelist() if "chart" in n or "drawing" in n or "worksheets/_rels" in n]
        assert "drawing" not in zf.read("[Content_Types].xml").decode() + zf.read("xl/worksheets/sheet1.xml").decode()


def test_a_chart_series_is_one_row_or_column():
    tab = Tab("Charts", "x", "guide")
    block = Rect("Data", 3, 3, 4, 2)
    with pytest.raises(ValueError, match="one row or one column"):
        tab.chart("t", block.col(0), block, Rect("Charts", 1, 1, 5, 5))
    with pytest.raises(ValueError, match="differ in length"):
        tab.chart("t", block.col(0).rows(0, 3), block.col(1), Rect("Charts", 1, 1, 5, 5))


@pytest.mark.engines
def test_ooxml_validator_finds_no_errors(book):
    assert_valid_ooxml(book)


@pytest.mark.engines
def test_libreoffice_keeps_the_charts(book, tmp_path):
    """LibreOffice reads the charts and writes them back over the same ranges, the formula column calculated."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                find_soffice(),
                f"-env:UserInstallation=file://{tmp}/profile",
                "--headless",
                "--calc",
                "--convert-to",
                "xlsx",
                str(book),
                "--outdir",
                str(tmp_path),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    saved = tmp_path / book.name
    assert sorted(chart_refs(saved).values()) == [[RANGES[0]], [RANGES[1]]]
    with zipfile.ZipFile(saved) as zf:
        charts = [ET.fromstring(zf.read(n)) for n in sorted(zf.namelist()) if n.startswith("xl/charts/chart")]
    smooth = next(c for c in charts if c.find(f".//{C}val//{C}f").text == RANGES[1][1])
    cached = [float(v.text) for v in smooth.find(f".//{C}val//{C}numCache").iter(f"{C}v")]
    assert np.allclose(cached, SMOOTH)  # the chart shows the values LibreOffice calculated
    assert ["".join(t.itertext()) for t in smooth.iter(f"{C}title")] == ["Smoothed loss", "step", "mean of two steps"]


@pytest.mark.engines
def test_gnumeric_keeps_the_charts(book, tmp_path):
    if not shutil.which("ssconvert"):
        pytest.skip("Gnumeric is not installed")
    subprocess.run(["ssconvert", str(book), str(tmp_path / "out.xlsx")], check=True, capture_output=True, timeout=300)
    assert sorted(chart_refs(tmp_path / "out.xlsx").values()) == [[RANGES[0]], [RANGES[1]]]
