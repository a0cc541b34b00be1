"""Cell styles (fonts, fills, number formats), the differential formats that conditional formatting uses,
and colour scales, as styles.xml and sheet XML fragments. A style is an index into STYLE_LIST."""

# (font, fill, number format); fonts, fills and number formats below
STYLE_LIST = {
    "normal": (0, 0, 0),
    "bold": (1, 0, 0),
    "input": (1, 2, 0),
    "title": (2, 0, 0),
    "big": (3, 0, 0),
    "number": (0, 0, 164),
    "percent": (0, 0, 165),
    "score": (0, 0, 166),
    "note": (4, 0, 0),
    "link": (5, 0, 0),
    "big input": (3, 2, 0),
    "section": (6, 3, 0),
    "ids": (0, 0, 1),
    "plain": (0, 0, 0),
    "big percent": (3, 0, 165),
    "big number": (3, 0, 164),
    "scientific": (0, 0, 167),
    "signed": (0, 0, 168),
}
(
    NORMAL,
    BOLD,
    INPUT,
    TITLE,
    BIG,
    NUMBER,
    PERCENT,
    SCORE,
    NOTE,
    LINK,
    BIG_INPUT,
    SECTION,
    IDS,
    PLAIN,
    BIG_PERCENT,
    BIG_NUMBER,
    SCIENTIFIC,
    SIGNED,
) = range(len(STYLE_LIST))
# PLAIN looks like NORMAL, but a cell that names it keeps it in a row with a style (NORMAL would take the row's)
FONTS = (
    '<font><sz val="11"/><name val="Calibri"/></font>',
    '<font><b/><sz val="11"/><name val="Calibri"/></font>',
    '<font><b/><sz val="14"/><color rgb="FF1F4E79"/><name val="Calibri"/></font>',
    '<font><b/><sz val="20"/><color rgb="FF1F4E79"/><name val="Calibri"/></font>',
    '<font><i/><sz val="10"/><color rgb="FF7F7F7F"/><name val="Calibri"/></font>',
    '<font><u/><sz val="11"/><color rgb="FF0563C1"/><name val="Calibri"/></font>',
    '<font><b/><sz val="12"/><color rgb="FFFFFFFF"/><name val="Calibri"/></font>',
)
FILLS = (
    '<fill><patternFill patternType="none"/></fill>',
    '<fill><patternFill patternType="gray125"/></fill>',
    '<fill><patternFill patternType="solid"><fgColor rgb="FFFFF2CC"/><bgColor indexed="64"/></patternFill></fill>',
    '<fill><patternFill patternType="solid"><fgColor rgb="FF1F4E79"/><bgColor indexed="64"/></patternFill></fill>',
)
# masked attention scores (-1E+30) read "masked"; other numbers with three decimals
# signed: blue for a positive number, red for a negative one, however small (the attribution's push up or down)
NUMBER_FORMATS = {
    164: "0.000",
    165: "0.0%",
    166: '[<-1E+29]"masked";0.000',
    167: "0.00E+00",
    168: "[Blue]+0.000;[Red]-0.000;0.000",
}
# differential formats for conditional formatting: 0 = a padding position (grey), 1..3 = shades of blue
PADDING = 0
DXFS = (
    '<dxf><font><color rgb="FFA6A6A6"/></font><fill><patternFill patternType="solid">'
    '<bgColor rgb="FFF2F2F2"/></patternFill></fill></dxf>',
) + tuple(
    f'<dxf><fill><patternFill patternType="solid"><bgColor rgb="{c}"/></patternFill></fill></dxf>'
    for c in ("FFDDEBF7", "FF9BC2E6", "FF5B9BD5")
)
LEVEL_SHADES = {0.25: 1, 0.5: 2, 0.75: 3}  # a probability at least this -> that shade
# tab colours by group
TAB_COLOURS = {
    "guide": "FF1F4E79",
    "prompt": "FFFFC000",
    "tokenizer": "FFF4B183",
    "model": "FF5B9BD5",
    "interpretability": "FF70AD47",
    "training": "FFC00000",
    "weights": "FFA5A5A5",
    "optimizer": "FFFF7C80",
    "tables": "FFD9D9D9",
}


def _escape(text):
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def styles_xml(head):
    fmts = "".join(f'<numFmt numFmtId="{i}" formatCode="{_escape(code)}"/>' for i, code in NUMBER_FORMATS.items())
    xfs = "".join(
        f'<xf numFmtId="{n}" fontId="{f}" fillId="{fill}" borderId="0" xfId="0"'
        + (' applyFont="1"' if f else "")
        + (' applyFill="1"' if fill else "")
        + (' applyNumberFormat="1"' if n else "")
        + "/>"
        for f, fill, n in STYLE_LIST.values()
    )
    return (
        head + '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<numFmts count="{len(NUMBER_FORMATS)}">{fmts}</numFmts>'
        f'<fonts count="{len(FONTS)}">{"".join(FONTS)}</fonts><fills count="{len(FILLS)}">{"".join(FILLS)}</fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        f'<cellXfs count="{len(STYLE_LIST)}">{xfs}</cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        f'<dxfs count="{len(DXFS)}">{"".join(DXFS)}</dxfs></styleSheet>'
    )


def colour_scale(low=None, high=None, colours=("FFFFFFFF", "FF2E75B6")):
    """A two-colour scale rule: white at `low` (default: the range's minimum) to blue at `high` (maximum)."""
    cfvo = lambda v, kind: f'<cfvo type="num" val="{v}"/>' if v is not None else f'<cfvo type="{kind}"/>'
    return (
        f'<cfRule type="colorScale" priority="{{priority}}"><colorScale>{cfvo(low, "min")}{cfvo(high, "max")}'
        + "".join(f'<color rgb="{c}"/>' for c in colours)
        + "</colorScale></cfRule>"
    )


def diverging_scale():
    """Red for negative, white at 0, blue for positive."""
    return (
        '<cfRule type="colorScale" priority="{priority}"><colorScale><cfvo type="min"/><cfvo type="num" val="0"/>'
        '<cfvo type="max"/><color rgb="FFF8696B"/><color rgb="FFFFFFFF"/><color rgb="FF5A8AC6"/></colorScale></cfRule>'
    )


def when(formula, dxf):
    """A rule that applies differential format `dxf` where `formula` (relative to the range's top-left) is true."""
    return (
        f'<cfRule type="expression" dxfId="{dxf}" priority="{{priority}}"><formula>{_escape(formula)}</formula>'
        "</cfRule>"
    )
