"""Excel's limits on a formula (8,192 characters, 64 nested function calls, 255 arguments), checked at build
time: a formula beyond one is a one-line error naming the tab, the cell and the limit, and no file."""

import pytest

from helpers import FIXTURES, ROOT, assert_clean_error, xlgpt
from xlgpt.package import XlgptError
from xlgpt.sheet.cells import ArrayFormula, Cells, Formula, Sheet
from xlgpt.sheet.layout import Rect
from xlgpt.sheet.limits import MAX_ARGUMENTS, MAX_LENGTH, MAX_NESTING, check_formulas, problem, scan


def nested(n):
    return "ABS(" * n + "1" + ")" * n


def call(n, arg="1", name="SUM"):
    return f"{name}(" + ",".join([arg] * n) + ")"


def test_length_is_counted_without_the_equals_sign():
    at = '"' + "x" * (MAX_LENGTH - 2) + '"'
    assert len(at) == MAX_LENGTH and problem(at) is None
    assert problem(at + "&1") == "a formula of 8,194 characters; Excel allows at most 8,192"


def test_nesting_of_function_calls():
    assert scan(nested(MAX_NESTING))[0] == MAX_NESTING and problem(nested(MAX_NESTING)) is None
    assert problem(nested(MAX_NESTING + 1)) == "function calls nested 65 deep; Excel allows at most 64"
    # parentheses that group, in a call or not, are not calls
    assert problem("(" * 100 + "1" + ")" * 100) is None
    assert problem("SUM(" + "(" * 100 + "1" + ")" * 100 + ")") is None
    assert scan("_xlfn.UNICHAR(LOG10(2))") == (2, 1, "LOG10")


def test_arguments_of_one_call():
    assert scan(call(MAX_ARGUMENTS)) == (1, MAX_ARGUMENTS, "SUM") and problem(call(MAX_ARGUMENTS)) is None
    assert problem(call(MAX_ARGUMENTS + 1)) == "256 arguments to SUM; Excel allows at most 255"
    # counted per call: an inner call's commas are its own
    assert problem("IF(1," + call(200) + "," + call(200) + ")") is None
    assert (
        problem("IF(1,2," + call(MAX_ARGUMENTS + 1, name="MAX") + ")")
        == "256 arguments to MAX; Excel allows at most 255"
    )


@pytest.mark.parametrize(
    "inside", ['"a,(b"', '"say ""(,"" twice"', "'x,(y'!A1", "'it''s (,'!$B$2", "{1,2,3;4,5,6}", "(A1,B1)"]
)
def test_strings_sheet_names_array_constants_and_unions_are_skipped(inside):
    """Commas and parentheses inside a string, a quoted sheet name or an array constant, and the union
    operator's commas inside a group, are no arguments and no calls."""
    assert scan(call(MAX_ARGUMENTS, inside)) == (1, MAX_ARGUMENTS, "SUM")
    assert problem(call(MAX_ARGUMENTS, inside)) is None
    assert problem(call(MAX_ARGUMENTS + 1, inside)).startswith("256 arguments to SUM")
    deep = "ABS(" * MAX_NESTING + inside + ")" * MAX_NESTING
    assert problem(deep) is None


def test_check_names_the_tab_and_the_cell():
    ok = Sheet(
        "Layer 0",
        [
            Cells(10, 3, [["label", Formula("SUM(A1:A3)")], [None, Formula(nested(3))]]),
            ArrayFormula(Rect("Layer 0", 20, 3, 4, 2), Formula("MMULT(A1:B2,C1:D2)")),
        ],
    )
    check_formulas([ok])
    text = Sheet("Notes", [Cells(1, 1, [["x" * 10_000]])])  # a text value, not a formula: no limit here
    check_formulas([text])
    too_long = "+".join(["$C$5"] * 2000)
    bad = Sheet("Layer 0", [Cells(10, 3, [[None, None], [None, Formula(too_long)]])])
    with pytest.raises(XlgptError, match=r"^Layer 0!D11: a formula of 9,999 characters; Excel allows at most 8,192$"):
        check_formulas([ok, bad])
    array = Sheet("Output", [ArrayFormula(Rect("Output", 7, 5, 3, 3), Formula(nested(70)))])
    with pytest.raises(XlgptError, match=r"^Output!E7: function calls nested 70 deep"):
        check_formulas([array])
    wide = Sheet("Output", [Cells(2, 1, [[Formula(call(300))]])])
    with pytest.raises(XlgptError, match=r"^Output!A2: 300 arguments to SUM"):
        check_formulas([wide])


# A stage whose op writes, at every position, a formula adding up its input 2,000 times: the template reaches
# the compiler's ops through the registry, so a test op stands in for a template that outgrows Excel.
STAGE = """
[[stage]]
tab = "Output"
name = "too_long"
op = "long_sum"
in = ["logits"]
"""


def test_build_refuses_a_template_whose_formula_excel_cannot_hold(tmp_path, monkeypatch):
    from xlgpt.compile.ops import OPS, Op

    def long_sum(ctx, x):
        out = ctx.block(ctx.rows("sum", 1))
        return ctx.each(out, "+".join(["{x}"] * 2000), x=lambda _, t: x.cell(0, t))

    monkeypatch.setitem(OPS, "long_sum", Op(long_sum, 1))
    template = tmp_path / "t.toml"
    template.write_text((ROOT / "templates" / "gpt2.toml").read_text() + STAGE)
    out = tmp_path / "book.xlsx"
    run = xlgpt("build", "--weights", FIXTURES / "tiny", "--tokens", "1,2", "--template", template, "--out", out)
    assert_clean_error(run, "xlgpt: error: Output!C", ": a formula of ", " characters; Excel allows at most 8,192")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.toml"]
