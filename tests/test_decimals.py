"""A float32 as a workbook holds it: the text the writer writes, the value the compiler and reference compute with,
against Python's own float parsing and repr, and NumPy's shortest float32 digits."""

import re

import numpy as np
import pytest

from xlgpt.decimals import decimal_texts, decimal_values

rng = np.random.default_rng(7)
SAMPLES = {
    "weights": rng.standard_normal(200_000) * 0.02,
    "every exponent": rng.standard_normal(50_000) * 10.0 ** rng.uniform(-45, 38, 50_000),
    "few digits": np.round(rng.standard_normal(20_000) * 1000) / 8,
    # of both signs: a float32 just below one rounds its digits up into the next (-0.0099999998 to -0.01)
    "powers of ten": np.outer([1, -1], 10.0 ** np.arange(-45, 39)).ravel(),
    "edges": [0.0, -0.0, 1.0, -1.0, 3.0, 1e-5, 1e-4, 9.99999e-5, 0.1, 1 / 3, 1e15, 1e16, 123456789.0, 2**-149, 3.4e38],
}


def significant(text):
    """The significant digits of a decimal's text: '-0.00250' -> '25'."""
    return re.sub(r"e.*", "", text).lstrip("-").replace(".", "").strip("0") or "0"


@pytest.mark.parametrize("name", SAMPLES)
def test_text_reads_back_as_the_value_and_is_shortest(name):
    a = np.asarray(SAMPLES[name], dtype=np.float32)
    a = a[np.isfinite(a)]
    texts, values = [t.decode() for t in decimal_texts(a)], decimal_values(a)
    for x, text, value in zip(a.tolist(), texts, values.tolist()):
        assert float(text) == value and np.float32(value) == np.float32(x), (x, text, value)  # round trip
        assert text == repr(value)  # the text a spreadsheet, Python and the reference agree on
        assert len(significant(text)) == len(significant(str(np.float32(x)))), (x, text)  # NumPy's shortest digits
    assert np.signbit(decimal_values(np.float32([-0.0])))[0]


def test_values_keep_their_shape():
    a = rng.standard_normal((3, 5)).astype(np.float32)
    assert decimal_values(a).shape == (3, 5)
    assert np.array_equal(decimal_values(a).astype(np.float32), a)
    assert decimal_values(np.float32([])).size == decimal_texts(np.float32([])).size == 0
