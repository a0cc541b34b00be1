"""Copy an xlgpt .xlsx for the browser: drop every <conditionalFormatting> (IronCalc evaluates them on load, before
the book, in an order that recurses ~90 cells deep and overflows the wasm stack) and optionally move sheets to the
end of the tab order so evaluation meets cells in dependency order. Usage: web_xlsx.py IN OUT [Sheet,...]"""
import re, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
last = sys.argv[3].split(",") if len(sys.argv) > 3 else []
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
    for item in zin.infolist():
        data = zin.read(item.filename)
        if item.filename.startswith("xl/worksheets/sheet"):
            data = re.sub(rb"<conditionalFormatting\b.*?</conditionalFormatting>", b"", data, flags=re.S)
        if item.filename == "xl/workbook.xml" and last:
            text = data.decode()
            sheets = re.findall(r'<sheet [^>]*/>', text)
            name = lambda s: re.search(r'name="([^"]+)"', s).group(1)
            moved = [s for s in sheets if name(s) not in last] + [s for n in last for s in sheets if name(s) == n]
            text = re.sub(r"<sheets>.*</sheets>", "<sheets>" + "".join(moved) + "</sheets>", text, flags=re.S)
            data = text.encode()
        zout.writestr(item, data)
