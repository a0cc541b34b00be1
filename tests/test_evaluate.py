"""xlgpt.compile.evaluate computes what Excel computes. The expected values come from an independent Excel
implementation, the `formulas` package, wherever it agrees with Excel; the few where it does not (or cannot
be asked in memory) are worked out by hand, each saying why."""

import contextlib
import io
import math
import re
import time
import warnings

import formulas
import numpy as np
import openpyxl
import pytest
from formulas.tokens.operand import XlError
from openpyxl.utils import get_column_letter

from xlgpt.compile.evaluate import Unsupported, parse

# ---------------------------------------------------------------------------------------------------------
# The independent side


def _cell(v):
    """One cell, the same way for both sides: 'error', a bool, a float or a str."""
    if isinstance(v, XlError):  # (a str)
        return "error"
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float, np.number)):
        return "error" if math.isnan(v) else float(v)
    raise TypeError(v)


def _cells(x):
    """A 2-D array of _cell values."""
    a = np.asarray(x, dtype=object)
    return np.vectorize(_cell, otypes=[object])(a.reshape(a.shape if a.ndim == 2 else (1, -1) if a.ndim else (1, 1)))


def excel(text, **operands):
    """What the `formulas` package computes for `text`: each placeholder becomes a range of its own
    columns (A1:B3, ...) holding that operand (a scalar or 2-D array)."""
    column, refs = 1, {}
    for name in dict.fromkeys(re.findall(r"\{(\w+)\}", text)):
        value = np.asarray(operands[name], dtype=object)
        value = value.reshape(1, 1) if value.ndim == 0 else value
        rows, cols = value.shape
        first, last = f"{get_column_letter(column)}1", f"{get_column_letter(column + cols - 1)}{rows}"
        ref = first if (rows, cols) == (1, 1) else f"{first}:{last}"
        refs[name] = (ref, value)
        column += cols
    formula = re.sub(r"\{(\w+)\}", lambda m: refs[m.group(1)][0], text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        function = formulas.Parser().ast("=" + formula)[1].compile()
        by_ref = {ref: value for ref, value in refs.values()}
        args = [by_ref[r] if by_ref[r].shape != (1, 1) else by_ref[r][0, 0] for r in function.inputs]
        return _cells(function(*args))


def ours(text, names=None, **env):
    """What the evaluator computes for `text`, one batch item, as _cells."""
    out = parse(text).evaluate(env, names)
    assert out.ndim == 3 and out.shape[0] == 1
    return _cells(out[0])


def same(a, b):
    """Equal cell for cell: numbers to 1e-12, text exactly, logicals as logicals, errors as errors."""
    assert a.shape == b.shape, (a, b)
    for x, y in zip(a.ravel(), b.ravel()):
        assert type(x) is type(y), (a, b)
        assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-300) if isinstance(x, float) else x == y, (a, b)


# operands
COL = np.array([[1.0], [2.0], [3.0]])
ROW = np.array([[10.0, 20.0]])
M = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]])
M2 = np.array([[0.5, -1.0], [2.0, 0.0], [1.0, 3.0]])
SIGNED = np.array([[-7.5], [-1.0], [0.0], [2.5], [7.0]])
TIES = np.array([[5.0], [3.0], [2.0], [2.0], [1.0]])
ASC = np.array([[1.0], [2.0], [2.0], [3.0], [4.0]])
LETTERS = np.array([["a"], ["b"], ["c"], ["d"], ["e"]], dtype=object)
MIXED = np.array([[1.0, True], ["x", 2.0]], dtype=object)
ZEROS = np.array([[0.0], [2.0], [4.0]])
TABLE = np.array([[1.0, "a"], [2.0, "b"], [3.0, "c"], [4.0, "d"]], dtype=object)
WORDS = np.array([["a"], ["b"], ["B"]], dtype=object)

CASES = [
    # precedence: unary minus binds tighter than ^; ^ is left-associative; % is /100
    ("-2^2", {}),
    ("2^3^2", {}),
    ("1+2*3-4/8", {}),
    ("2*-3", {}),
    ("10%+1", {}),
    ("-{c}^2", dict(c=COL)),
    ("1+2&3", {}),
    ("1+2>2", {}),
    ("(1+2)*3", {}),
    # broadcasting: column against row, matrix against row / column / scalar
    ("{c}+{r}", dict(c=COL, r=ROW)),
    ("{m}*{r}", dict(m=M, r=ROW)),
    ("{m}-{c}", dict(m=M, c=COL)),
    ("{m}/{s}", dict(m=M, s=4.0)),
    # math
    ("SQRT({c})", dict(c=COL)),
    ("EXP({m})", dict(m=M)),
    ("LN({c})", dict(c=COL)),
    ("TANH({m})", dict(m=M)),
    ("INT({v})", dict(v=SIGNED)),
    ("MOD({v},3)", dict(v=SIGNED)),
    ("MOD({v},-3)", dict(v=SIGNED)),
    ("PI()*2", {}),
    ("ABS({v})", dict(v=SIGNED)),
    ("N({s})", dict(s=4.5)),
    ('N("text")', {}),
    ("SQRT(-1)", {}),
    ("LN(0)", {}),
    ("MOD(5,0)", {}),
    # aggregates (text and logicals in an array are skipped)
    ("SUM({m})", dict(m=M)),
    ("SUM({m},{c},1)", dict(m=M, c=COL)),
    ("MAX({m})", dict(m=M)),
    ("MIN({m})", dict(m=M)),
    ("MAX({x})", dict(x=MIXED)),
    ("MIN({x})", dict(x=MIXED)),
    ("AVERAGE({x})", dict(x=MIXED)),
    ("AVERAGE({m})", dict(m=M)),
    ("COUNT({x})", dict(x=MIXED)),
    ("SUM({x})", dict(x=MIXED)),
    ("SUMPRODUCT({m},{n})", dict(m=M, n=M2)),
    ("SUMPRODUCT(({c}-{s})^2)/3", dict(c=COL, s=2.0)),
    ("LARGE({t},2)", dict(t=TIES)),
    ("LARGE({t},5)", dict(t=TIES)),
    ("SMALL({t},{k})", dict(t=TIES, k=COL)),
    ("LARGE({t},6)", dict(t=TIES)),
    # logic
    ("IF({c}>2,{c},-1)", dict(c=COL)),
    ('IF({c}>1,"big")', dict(c=COL)),
    ('IF({c}>1,"big",{c})', dict(c=COL)),
    ("AND({c}>0,{c}<10)", dict(c=COL)),
    ("AND({c}>1)", dict(c=COL)),
    ("OR({c}>2)", dict(c=COL)),
    ("OR({c}>5,FALSE)", dict(c=COL)),
    ("AND({x})", dict(x=MIXED)),
    ("NOT({v})", dict(v=SIGNED)),
    ("ISNUMBER({x})", dict(x=MIXED)),
    ('IFERROR(1/{z},"none")', dict(z=ZEROS)),
    # lookup
    ("INDEX({t},2)", dict(t=TIES)),
    ("INDEX({r},2)", dict(r=ROW)),
    ("INDEX({m},2,1)", dict(m=M)),
    ("INDEX({m},3,2)", dict(m=M)),
    ("INDEX({t},{k})", dict(t=TIES, k=COL)),
    ("MATCH(2,{t},0)", dict(t=TIES)),
    ("MATCH(9,{t},0)", dict(t=TIES)),
    ("MATCH({k},{t},0)", dict(t=TIES, k=COL)),
    ("MATCH(2.5,{a},1)", dict(a=ASC)),
    ("MATCH(3,{a},1)", dict(a=ASC)),
    ("MATCH(0.5,{a},1)", dict(a=ASC)),
    ("MATCH(9,{a})", dict(a=ASC)),
    ('MATCH("B",{w},0)', dict(w=WORDS)),
    ("CHOOSE({k},10,20,30)", dict(k=np.array([[3.0, 1.0, 2.0]]))),
    ("CHOOSE(1,{c},1/0)", dict(c=COL)),
    ("LOOKUP(2.5,{a},{l})", dict(a=ASC, l=LETTERS)),
    ("LOOKUP(0,{a},{l})", dict(a=ASC, l=LETTERS)),
    ("LOOKUP({r},{a},{l})", dict(r=np.array([[1.5, 3.0, 9.0]]), a=ASC, l=LETTERS)),
    ("VLOOKUP(2.5,{t},2,TRUE)", dict(t=TABLE)),
    ("VLOOKUP(3,{t},2,FALSE)", dict(t=TABLE)),
    ("VLOOKUP(2.5,{t},2,FALSE)", dict(t=TABLE)),
    ("VLOOKUP(4,{t},1)", dict(t=TABLE)),
    ('SUMIF({p},"<="&{p},{w})', dict(p=np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), w=np.array([[1.0, 0, 1, 1, 0]]))),
    ('SUMIF({p},"<"&{p},{w})', dict(p=np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), w=np.array([[1.0, 0, 1, 1, 0]]))),
    ("SUMIF({t},2,{c})", dict(t=TIES, c=np.arange(5.0).reshape(5, 1))),
    # text
    ("LEN({w})", dict(w=WORDS)),
    ("LEN(12.5)", {}),
    ('MID("hello",{c},2)', dict(c=COL)),
    ('MID("hello",0,2)', {}),
    ("CHAR(65)&_xlfn.UNICHAR(9731)", {}),
    ('_xlfn.UNICODE("é")', {}),
    ('EXACT({w},"b")', dict(w=WORDS)),
    ('"a"&1&TRUE&0.5', {}),
    ("{w}&{c}", dict(w=WORDS, c=COL)),
    ('"say ""hi"""', {}),
    # comparisons: text without case, numbers < text < logicals
    ('"a"="A"', {}),
    ('"a"<"B"', {}),
    ('1<"a"', {}),
    ("TRUE>5", {}),
    ("{x}>1", dict(x=MIXED)),
    ('{w}="b"', dict(w=WORDS)),
    # matrices
    ("MMULT({m},{r})", dict(m=M, r=np.array([[1.0, -1.0], [2.0, 0.5]]))),
    ("TRANSPOSE({m})", dict(m=M)),
    ("MMULT(TRANSPOSE({m}),{m})", dict(m=M)),
    # errors propagate through arithmetic, comparisons and aggregates; IF and IFERROR drop the ones they skip
    ("{c}/{z}", dict(c=COL, z=ZEROS)),
    ("SUM({c}/{z})", dict(c=COL, z=ZEROS)),
    ("MAX({c}/{z})", dict(c=COL, z=ZEROS)),
    ("IF({z}=0,0,{c}/{z})", dict(c=COL, z=ZEROS)),
    ("ISNUMBER({c}/{z})", dict(c=COL, z=ZEROS)),
    ("{c}/{z}>1", dict(c=COL, z=ZEROS)),
    ("SUMPRODUCT({c}/{z},{c})", dict(c=COL, z=ZEROS)),
    ("MATCH(1/0,{t},0)", dict(t=TIES)),
    ("INDEX({t},7)", dict(t=TIES)),
    ('({c}/{z})&"x"', dict(c=COL, z=ZEROS)),
]


@pytest.mark.parametrize("text,operands", CASES, ids=[c[0] for c in CASES])
def test_computes_what_formulas_computes(text, operands):
    same(ours(text, **operands), excel(text, **operands))


# ---------------------------------------------------------------------------------------------------------
# Where the `formulas` package is not Excel, or cannot be asked: by hand


def test_values_by_hand():
    # N(TRUE) is 1 in Excel (formulas gives TRUE)
    same(ours("N(TRUE)"), _cells(1.0))
    # & writes a number as Excel's General format does: 15 significant digits, E notation for large ones
    # (formulas writes 1E+30 as all its digits)
    same(ours('"x"&1E+30&"|"&(1/3)&"|"&-2'), _cells("x1E+30|0.333333333333333|-2"))
    # CHAR is Windows-1252: 200 is È (formulas gives », which is 187)
    same(ours("CHAR(200)&CHAR(128)"), _cells("È€"))
    # a lone surrogate, which the prompt cell writes as UNICHAR(55296)
    same(ours("_xlfn.UNICHAR(55296)"), _cells("\ud800"))
    # MATCH -1: the smallest value >= 2.5 in the descending 5,3,2,2,1 is 3, the 2nd
    same(ours("MATCH(2.5,{t},-1)", t=TIES), _cells(2.0))
    # Sorted MATCH is a binary search, which ends on the last of equal values: MATCH(2,{1,2,2,3,4},1) is 3
    # in Excel (formulas says 2), and MATCH(0,{3,2,2},-1) is 3 (as reported on Microsoft's Tech Community,
    # "XMATCH and MATCH return different result", and on MrExcel's VLOOKUP-with-duplicates thread)
    same(ours("MATCH(2,{a},1)", a=ASC), _cells(3.0))
    same(ours("MATCH(2,{a})", a=ASC), _cells(3.0))
    same(ours("MATCH(0,{d},-1)", d=np.array([[3.0, 2.0, 2.0]])), _cells(3.0))
    same(ours("LOOKUP(2,{a},{l})", a=ASC, l=LETTERS), _cells("c"))
    # INDEX with 0 as the row: the whole column
    same(ours("INDEX({m},0,2)", m=M), _cells([[2.0], [4.0], [-6.0]]))
    # nothing to judge: AND of text alone is #VALUE!
    same(ours('AND("x")'), _cells(math.nan))
    # 0^0 is #NUM! in Excel (numpy says 1)
    same(ours("0^0"), _cells(math.nan))
    # UNICODE of empty text and CHAR(0) are #VALUE!
    same(ours('_xlfn.UNICODE("")'), _cells(math.nan))
    same(ours("CHAR(0)"), _cells(math.nan))
    # LOOKUP's two-argument form returns from the lookup vector itself
    same(ours("LOOKUP(3.5,{a})", a=ASC), _cells(3.0))
    # SUMIF with text criteria compares text without case
    same(ours('SUMIF({w},"=b",{c})', w=WORDS, c=COL), _cells(5.0))
    same(ours('SUMIF({w},"<>b",{c})', w=WORDS, c=COL), _cells(1.0))


def test_nested_choose_the_compilers_way():
    """CHOOSE in groups (what xlgpt.compile.context.choose writes for many values), k elementwise."""
    text = "CHOOSE(INT(({k}-1)/3)+1,CHOOSE({k},10,20,30),CHOOSE({k}-3,40,50,60),CHOOSE({k}-6,70,80))"
    k = np.array([[1.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0]])
    expected = excel(text, k=k)
    same(ours(text, k=k), expected)
    same(expected[:, :6], _cells([[10.0, 30.0, 40.0, 60.0, 70.0, 80.0]]))  # and 9 is out of range: #VALUE!


def _excel_model(tmp_path, column, cells):
    """Values of formula `cells` ({address: formula}) next to `column` in a real book, by formulas'
    ExcelModel (its in-memory ranges do not support INDEX(...):INDEX(...))."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "S"
    for i, v in enumerate(column, 1):
        sheet.cell(i, 1, v)
    for address, formula in cells.items():
        sheet[address] = "=" + formula
    book.save(tmp_path / "ranges.xlsx")
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = formulas.ExcelModel().loads(str(tmp_path / "ranges.xlsx")).finish().calculate()
    values = {k.split("!")[1]: v.value for k, v in solution.items() if "!" in k}
    return {address: _cell(np.asarray(values[address]).ravel()[0]) for address in cells}


def test_index_ranges(tmp_path):
    column = [5.0, 3.0, 2.0, 2.0, 1.0, 2.0]
    p = np.array(column).reshape(-1, 1)
    ends = [(2, 6), (3, 6), (4, 6), (5, 6), (6, 2)]  # the last one backwards: the same range
    match = "MATCH(2,INDEX({p},{i}):INDEX({p},{j}),0)"
    total = "SUM(INDEX({p},{i}):INDEX({p},{j}))"
    cells = {}
    for n, (i, j) in enumerate(ends, 1):
        cells[f"C{n}"] = match.replace("{p}", "A1:A6").replace("{i}", str(i)).replace("{j}", str(j))
        cells[f"D{n}"] = total.replace("{p}", "A1:A6").replace("{i}", str(i)).replace("{j}", str(j))
    expected = _excel_model(tmp_path, column, cells)
    i = np.array([e[0] for e in ends], float).reshape(-1, 1, 1)
    j = np.array([e[1] for e in ends], float).reshape(-1, 1, 1)
    # a batch whose ranges differ in length (evaluated item by item) and one where they do not
    for text, letter in ((match, "C"), (total, "D")):
        got = parse(text).evaluate({"p": p, "i": i, "j": j})
        assert got.shape == (5, 1, 1)
        for n in range(5):
            same(_cells(got[n]), _cells(expected[f"{letter}{n + 1}"]))
    same(ours("INDEX({p},2):INDEX({p},4)", p=p), _cells([[3.0], [2.0], [2.0]]))
    same(ours("INDEX({m},1,1):INDEX({m},2,2)", m=M), _cells(M[:2]))
    # the compiler's top-k ids: each value found after the previous one's position
    top = parse("IF({v}={above},{prev}+MATCH({v},INDEX({p},{prev}+2):INDEX({p},{n}),0),MATCH({v},{p},0)-1)")
    items = lambda *values: np.array(values).reshape(-1, 1, 1)
    got = top.evaluate(
        {"v": items(2.0, 2.0, 2.0), "above": items(3.0, 2.0, 2.0), "prev": items(1.0, 2.0, 3.0), "p": p, "n": 6.0}
    )
    assert got.ravel().tolist() == [2.0, 3.0, 5.0]  # ids of the 2s at positions 3, 4, 6 (0-based 2, 3, 5)


# ---------------------------------------------------------------------------------------------------------
# Batches, shapes, types


def test_a_batch_is_its_items_evaluated_one_by_one():
    rng = np.random.default_rng(0)
    x, b = rng.normal(size=(4, 3, 1)), rng.normal(size=(3, 1))
    for text in (
        "MMULT(W,{x})+{b}",
        "IF({x}>0,{x},{b}*2)",
        "SUM({x})/COUNT({x})",
        "MATCH(MAX({x}),{x},0)-1",
        "LARGE({x},2)",
        "INDEX({x},MATCH(MIN({x}),{x},0))",
        "SUMPRODUCT({x},{b})",
    ):
        names = {"W": rng.normal(size=(3, 3))}.get
        batch = parse(text).evaluate({"x": x, "b": b}, names)
        one_by_one = [parse(text).evaluate({"x": x[i], "b": b}, names) for i in range(4)]
        assert batch.shape[0] == 4
        np.testing.assert_allclose(batch, np.concatenate(one_by_one), rtol=1e-12)
        same(_cells(batch[1]), excel(text.replace("W", "{W}"), x=x[1], b=b, W=names("W")))


def test_shapes_and_types():
    assert parse("1+1").evaluate({}).shape == (1, 1, 1)
    assert parse("{a}*2").evaluate({"a": 3}).shape == (1, 1, 1)  # a Python scalar: one 1x1 item
    assert parse("{a}*2").evaluate({"a": np.ones((2, 3))}).shape == (1, 2, 3)  # 2-D: one item
    assert parse("{a}+{b}").evaluate({"a": np.ones((5, 1, 1)), "b": np.ones((1, 2, 3))}).shape == (5, 2, 3)
    assert parse("SUM({a})").evaluate({"a": np.ones((5, 2, 3))}).shape == (5, 1, 1)
    assert parse("TRANSPOSE({a})").evaluate({"a": np.ones((5, 2, 3))}).shape == (5, 3, 2)
    assert parse("{a}>1").evaluate({"a": np.arange(3.0).reshape(1, 3)}).dtype == bool
    assert parse('{a}&""').evaluate({"a": np.arange(3.0).reshape(1, 3)}).dtype == object
    assert parse("IF({a}>1,TRUE,0)").evaluate({"a": np.arange(3.0).reshape(1, 3)}).ravel().tolist() == [0.0, 0.0, True]
    assert parse("{a}*1").evaluate({"a": np.array([[1, 2]])}).dtype == np.float64  # ints read as numbers
    assert parse("1/0").evaluate({}).item() != parse("1/0").evaluate({}).item()  # NaN, not inf
    assert parse("EXP(1000)").evaluate({}).item() != parse("EXP(1000)").evaluate({}).item()  # overflow: #NUM!


def test_defined_names_broadcast_over_the_batch():
    vocabulary = np.array([["a"], ["b"], ["c"]], dtype=object)
    got = parse("INDEX(Vocabulary,{id}+1)").evaluate(
        {"id": np.array([2.0, 0.0, 5.0]).reshape(3, 1, 1)}, {"Vocabulary": vocabulary}.get
    )
    assert got.ravel().tolist()[:2] == ["c", "a"] and math.isnan(got.ravel()[2])  # id 5 is past the end: #REF!
    with pytest.raises(Unsupported, match="Vocabulary"):
        parse("INDEX(Vocabulary,1)").evaluate({})
    with pytest.raises(Unsupported, match="Other"):
        parse("Other+1").evaluate({}, {"Vocabulary": vocabulary}.get)


def test_a_branch_nobody_picks_is_not_evaluated():
    """As in Excel, IF, IFERROR and CHOOSE skip what they do not pick: here a name nobody defined."""
    same(ours("IF({c}>0,{c},Missing)", c=COL), _cells(COL))
    same(ours("IFERROR({c},Missing)", c=COL), _cells(COL))
    same(ours("CHOOSE(1,{c},Missing)", c=COL), _cells(COL))
    with pytest.raises(Unsupported, match="Missing"):
        ours("IF({c}>2,{c},Missing)", c=COL)


def test_unsupported():
    for text, what in (
        ("FOO(1)", "FOO"),
        ("OFFSET({a},1,0)", "OFFSET"),
        ("Sheet1!A1", "cannot read"),
        ("{1,2}", "cannot read"),
        ("1+", "ends too soon"),
        ("SUM(1", "expected"),
        ("SQRT(1,2)", "SQRT with 2 arguments"),
        ("{a}:{b}", "range"),
    ):
        with pytest.raises(Unsupported, match=re.escape(what)):
            parse(text).evaluate({"a": 1.0, "b": 2.0})
    with pytest.raises(Unsupported, match="sizes"):
        parse("{a}+{b}").evaluate({"a": np.ones((3, 1)), "b": np.ones((2, 1))})


def test_parse_is_cached():
    assert parse("SUM({x})+1") is parse("SUM({x})+1")


def test_fast_enough():
    """The work the compiler hands over: a layer's projection for 64 positions; MATCH and INDEX over
    thousands of batch items (each with its own vector, or one shared vector)."""
    rng = np.random.default_rng(1)
    weight, x, bias = rng.normal(size=(2304, 768)), rng.normal(size=(64, 768, 1)), rng.normal(size=(2304, 1))
    start = time.perf_counter()
    got = parse("MMULT(W,{x})+{b}").evaluate({"x": x, "b": bias}, {"W": weight}.get)
    np.testing.assert_allclose(got[:, :, 0], (weight @ x[:, :, 0].T + bias).T, rtol=1e-9, atol=1e-9)
    logits = rng.normal(size=(3000, 300, 1))
    ids = parse("MATCH(MAX({l}),{l},0)-1").evaluate({"l": logits})
    np.testing.assert_array_equal(ids.ravel(), logits[:, :, 0].argmax(axis=1))
    table = rng.normal(size=(50000, 1))
    picked = parse("INDEX({t},{i}+1)").evaluate({"t": table, "i": np.arange(3000.0).reshape(-1, 1, 1)})
    np.testing.assert_array_equal(picked.ravel(), table[:3000, 0])
    assert time.perf_counter() - start < 1.5
