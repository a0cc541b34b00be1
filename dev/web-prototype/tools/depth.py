"""Simulate IronCalc's evaluation order (sheets in order, rows then columns sorted; each formula evaluates the cells
it references recursively when not yet evaluated) on an .xlsx and report the deepest chain of nested cell
evaluations, which is what overflows the wasm stack. Usage: depth.py BOOK.xlsx [SheetToMoveLast,...]"""
import re, sys, zipfile
from collections import Counter, defaultdict
from xml.etree.ElementTree import iterparse

NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
book = sys.argv[1]
move_last = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else []
z = zipfile.ZipFile(book)
wb = z.read("xl/workbook.xml").decode()
rels = z.read("xl/_rels/workbook.xml.rels").decode()
target = dict(re.findall(r'Id="(rId\d+)"[^>]*Target="([^"]+)"', rels)) or {}
target.update({a: b for b, a in re.findall(r'Target="([^"]+)"[^>]*Id="(rId\d+)"', rels)})
sheets = re.findall(r'<sheet name="([^"]+)" sheetId="\d+" r:id="(rId\d+)"', wb)
names = {n: v for n, v in re.findall(r'<definedName name="([^"]+)">([^<]+)</definedName>', wb)}

def col2n(s):
    n = 0
    for ch in s: n = n * 26 + ord(ch) - 64
    return n
def n2col(n):
    s = ""
    while n: n, r = divmod(n - 1, 26); s = chr(65 + r) + s
    return s

REF = re.compile(r"(?:'((?:[^']|'')+)'|([A-Za-z_][\w. ]*?))?(!)?(\$?)([A-Z]{1,3})(\$?)(\d+)(?::(\$?)([A-Z]{1,3})(\$?)(\d+))?(?![\w(])")
STR = re.compile(r'"(?:[^"]|"")*"')
NAME = re.compile(r"(?<![\w!'.$])([A-Za-z_][A-Za-z0-9_.]*)(?![\w(!])")

def refs(formula, sheet):
    """[(sheet, r1, c1, r2, c2)] referenced by a formula."""
    f = STR.sub('""', formula)
    out = []
    for m in REF.finditer(f):
        q, u, bang = m.group(1), m.group(2), m.group(3)
        sh = (q.replace("''", "'") if q else u) if bang else sheet
        if not bang and (q or u):
            continue
        c1, r1 = col2n(m.group(5)), int(m.group(7))
        c2, r2 = (col2n(m.group(9)), int(m.group(11))) if m.group(9) else (c1, r1)
        out.append((sh, r1, c1, r2, c2))
    for m in NAME.finditer(REF.sub("", f)):
        if m.group(1) in names:
            v = names[m.group(1)]
            mm = re.match(r"(?:'((?:[^']|'')+)'|([^!]+))!\$?([A-Z]+)\$?(\d+)(?::\$?([A-Z]+)\$?(\d+))?$", v)
            if mm:
                sh = (mm.group(1) or mm.group(2)).replace("''", "'")
                c1, r1 = col2n(mm.group(3)), int(mm.group(4))
                c2, r2 = (col2n(mm.group(5)), int(mm.group(6))) if mm.group(5) else (c1, r1)
                out.append((sh, r1, c1, r2, c2))
    return out

def shift(formula, dr, dc):
    f_parts = re.split(r'("(?:[^"]|"")*")', formula)
    def sub(m):
        q, u, bang = m.group(1), m.group(2), m.group(3)
        if not bang and (q or u):
            return m.group(0)
        pre = m.group(0)[: m.start(4) - m.start(0)]
        def one(dc_, c, dr_, r):
            c2 = c if dc_ else n2col(col2n(c) + dc)
            r2 = r if dr_ else str(int(r) + dr)
            return f"{dc_}{c2}{dr_}{r2}"
        s = pre + one(m.group(4), m.group(5), m.group(6), m.group(7))
        if m.group(8) is not None:
            s += ":" + one(m.group(8), m.group(9), m.group(10), m.group(11))
        return s
    return "".join(p if i % 2 else REF.sub(sub, p) for i, p in enumerate(f_parts))

formulas = {}  # (sheet, r, c) -> list of refs
cells_by_sheet = defaultdict(list)
for name, rid in sheets:
    path = "xl/" + target[rid].lstrip("/").replace("xl/", "")
    shared = {}
    for ev, el in iterparse(z.open(path)):
        if el.tag != NS + "c":
            if el.tag == NS + "row": el.clear()
            continue
        f = el.find(NS + "f")
        if f is not None:
            ref = el.get("r"); m = re.match(r"([A-Z]+)(\d+)", ref); c, r = col2n(m.group(1)), int(m.group(2))
            text = f.text
            if f.get("t") == "shared":
                si = f.get("si")
                if text:
                    shared[si] = (text, r, c, refs(text, name))
                    rs = shared[si][3]
                else:
                    t0, r0, c0, _ = shared[si]
                    rs = refs(shift(t0, r - r0, c - c0), name)
            else:
                rs = refs(text or "", name)
            formulas[(name, r, c)] = rs
            cells_by_sheet[name].append((r, c))
            if f.get("t") == "array" and f.get("ref") and ":" in f.get("ref"):
                # the other cells of an array formula depend on its anchor
                a, b = f.get("ref").split(":")
                ma, mb = re.match(r"([A-Z]+)(\d+)", a), re.match(r"([A-Z]+)(\d+)", b)
                for rr in range(int(ma.group(2)), int(mb.group(2)) + 1):
                    for cc in range(col2n(ma.group(1)), col2n(mb.group(1)) + 1):
                        if (rr, cc) != (r, c):
                            formulas[(name, rr, cc)] = [(name, r, c, r, c)]
                            cells_by_sheet[name].append((rr, cc))
        el.clear()

rows_index = {}
for sh, cl in cells_by_sheet.items():
    d = defaultdict(list)
    for r, c in cl: d[r].append(c)
    rows_index[sh] = {r: sorted(v) for r, v in d.items()}
import bisect
def cells_in(rng):
    sh, r1, c1, r2, c2 = rng
    idx = rows_index.get(sh, {})
    out = []
    if r2 - r1 < len(idx):
        for r in range(r1, r2 + 1):
            cs = idx.get(r)
            if cs:
                out += [(sh, r, c) for c in cs[bisect.bisect_left(cs, c1):bisect.bisect_right(cs, c2)]]
    else:
        for r, cs in idx.items():
            if r1 <= r <= r2:
                out += [(sh, r, c) for c in cs[bisect.bisect_left(cs, c1):bisect.bisect_right(cs, c2)]]
    return out

order = [n for n, _ in sheets if n not in move_last] + [n for n in move_last]
done = set(); done_rng = set()
best = (0, None)
for sh in order:
    for r, c in sorted(cells_by_sheet[sh]):
        start = (sh, r, c)
        if start in done: continue
        # iterative DFS: stack of (cell, iterator over dependency cells)
        done.add(start)
        stack = [(start, iter(()))]
        def deps(cell):
            for rng in formulas.get(cell, ()):
                if rng[1:3] == rng[3:5]:
                    yield (rng[0], rng[1], rng[2])
                elif rng not in done_rng:
                    done_rng.add(rng)
                    yield from cells_in(rng)
        stack = [(start, deps(start))]
        while stack:
            if len(stack) > best[0]:
                best = (len(stack), [s[0] for s in stack])
            cell, it = stack[-1]
            for d in it:
                if d in formulas and d not in done:
                    done.add(d); stack.append((d, deps(d))); break
            else:
                stack.pop()
print(f"{book}: {len(formulas)} formula cells, order {'|'.join(order)}")
print("max nested cell evaluations:", best[0])
path = best[1]
print("sheets along the deepest chain:", Counter(p[0] for p in path).most_common())
print("chain (every 10th):", [f"{p[0]}!{n2col(p[2])}{p[1]}" for p in path[::max(1, len(path)//20)]])
