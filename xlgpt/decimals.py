"""Numbers as a workbook holds them: a float32 written as its shortest decimal, which a spreadsheet reads
back as a float64. The writer writes them so; the reference computes with what is read back."""

import numpy as np


def decimal_values(a, chunk=1 << 20):
    """The float64 values a spreadsheet reads back from the decimals Numbers writes for float32 `a`:
    for each value, the shortest decimal (1 to 9 significant digits) that round-trips to it."""
    a32 = np.asarray(a, dtype=np.float32).ravel()
    if a32.size > chunk:  # a piece at a time: the search's temporaries take ~50 bytes a value
        return np.concatenate([decimal_values(a32[i : i + chunk]) for i in range(0, a32.size, chunk)]).reshape(
            np.shape(a)
        )
    x = a32.astype(np.float64)
    out = x.copy()
    todo = np.flatnonzero(x)
    exponent = np.floor(np.log10(np.abs(x[todo])))
    for digits in range(1, 10):
        scale = 10.0 ** (digits - 1 - exponent)
        rounded = np.round(x[todo] * scale) / scale
        ok = rounded.astype(np.float32) == a32[todo]
        out[todo[ok]] = rounded[ok]
        todo, exponent = todo[~ok], exponent[~ok]
    return out.reshape(np.shape(a))
