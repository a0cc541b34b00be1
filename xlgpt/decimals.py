"""Numbers as a workbook holds them: a float32 written as its shortest decimal, which a spreadsheet reads
back as a float64. The writer writes them so; the reference computes with what is read back."""

import numpy as np

CHUNK = 1 << 20  # values searched at a time: the search's temporaries take ~50 bytes a value
POWERS = 10.0 ** np.arange(-64, 65)  # POWERS[64 + k] = 10^k, exact for |k| <= 22


def shortest_decimals(a32):
    """For float32 values `a32` (1-D): (mantissa, exponent, digits) of the shortest decimal (1 to 9 significant
    digits) that a float32 reads back as the same value: mantissa * 10^(exponent - digits + 1), `exponent` being
    that of the leading digit. Zero is (0, 0, 1)."""
    x = a32.astype(np.float64)
    mantissa, exponent, digits = np.zeros(x.size), np.zeros(x.size, np.int64), np.ones(x.size, np.int64)
    todo = np.flatnonzero(np.isfinite(x) & (x != 0))
    exponent[todo] = np.floor(np.log10(np.abs(x[todo])))

    def reads_back(where, d):
        """(mantissa, does it read back) of rounding x[where] to d digits."""
        scaled = np.round(x[where] * POWERS[64 + d - 1 - exponent[where]])
        return scaled, value_of(scaled, exponent[where] - d + 1).astype(np.float32) == a32[where]

    # Most float32 values need 8 digits, a few 9 (always enough), a third fewer: try 8, then 9 or fewer. Rounding to
    # fewer digits never comes closer, so the search down stops at the first that does not read back.
    mantissa[todo], ok = reads_back(todo, 8)
    digits[todo] = 8
    nine, todo = todo[~ok], todo[ok]
    mantissa[nine], digits[nine] = reads_back(nine, 9)[0], 9
    for d in range(7, 0, -1):
        scaled, ok = reads_back(todo, d)
        todo = todo[ok]
        mantissa[todo], digits[todo] = scaled[ok], d
    carry = np.abs(mantissa) >= POWERS[64 + digits]  # rounded up to the next power of ten (-0.0099999998 to -0.01)
    mantissa[carry], exponent[carry] = mantissa[carry] / 10, exponent[carry] + 1
    return mantissa, exponent, digits


def value_of(mantissa, place):
    """mantissa * 10^place, correctly rounded, as a spreadsheet reads the decimal."""
    out = np.where(place >= 0, mantissa * POWERS[64 + np.abs(place)], mantissa / POWERS[64 + np.abs(place)])
    far = np.flatnonzero(np.abs(place) > 22)  # beyond the exact powers of ten (tiny or huge values): parsed
    out[far] = [float(f"{m:.0f}e{p}") for m, p in zip(mantissa[far].tolist(), place[far].tolist())]
    return out


def decimal_values(a):
    """The float64 values a spreadsheet reads back from the decimals Numbers writes for float32 `a`:
    for each value, the shortest decimal (1 to 9 significant digits) that round-trips to it."""
    a32 = np.asarray(a, dtype=np.float32).ravel()
    out = np.empty(a32.size)
    for i in range(0, a32.size, CHUNK):
        piece = a32[i : i + CHUNK]
        out[i : i + CHUNK] = _read_back(piece, *shortest_decimals(piece))
    return out.reshape(np.shape(a))


def _read_back(a32, mantissa, exponent, digits):
    finite = np.isfinite(a32) & (a32 != 0)  # zero keeps its sign, as "-0.0" reads
    return np.where(finite, value_of(mantissa, exponent - digits + 1), a32)


# repr()'s fixed notation ("-0.0025146045", "12.5", "3.0") is assembled from a value's characters, its 9 digits
# (the mantissa, zero-padded) then "0", "-" and "."; a layout for each (sign, exponent, digits) picks them in order.
# Outside these exponents repr() writes scientific notation ("1e-05"), and repr itself writes it (a few values).
FIXED_EXPONENTS = range(-4, 16)
ZERO, MINUS, POINT = 9, 10, 11


def _layout(negative, exponent, digits):
    before, after = max(exponent + 1, 1), max(digits - exponent - 1, 1)  # characters either side of the point
    last = exponent - digits + 1  # the place of the mantissa's last digit
    places = [*range(before - 1, -1, -1), None, *range(-1, -after - 1, -1)]
    return [MINUS] * negative + [
        POINT if p is None else 8 - (p - last) if 0 <= p - last < digits else ZERO for p in places
    ]


LAYOUTS = [_layout(negative, e, d) for negative in (0, 1) for e in FIXED_EXPONENTS for d in range(1, 10)]


def decimal_texts(a):
    """The text a workbook holds for each float32 of `a`: repr() of the float64 it reads back as (its shortest
    decimal), as a 1-D NumPy bytes array."""
    a32 = np.asarray(a, dtype=np.float32).ravel()
    mantissa, exponent, digits = shortest_decimals(a32)
    fixed = np.isfinite(a32) & (exponent >= FIXED_EXPONENTS.start) & (exponent < FIXED_EXPONENTS.stop)
    layout = (np.signbit(a32) * len(FIXED_EXPONENTS) + exponent - FIXED_EXPONENTS.start) * 9 + digits - 1
    layout = np.where(fixed, layout, -1).astype(np.int16)
    chars = np.empty((a32.size, 12), np.uint8)
    chars[:, 9:] = np.frombuffer(b"0-.", np.uint8)
    m = np.abs(mantissa).astype(np.uint32)
    for k in range(8, -1, -1):  # the digits, last first
        chars[:, k] = m % 10 + ord("0")
        m //= 10
    order = np.argsort(layout, kind="stable")  # the values of each layout together (a radix sort: small integers)
    kinds, starts = np.unique(layout[order], return_index=True)
    rest = np.flatnonzero(~fixed)  # scientific notation, nan and inf: up to 24 characters
    width = max([len(LAYOUTS[k]) for k in kinds if k >= 0] + [24 if rest.size else 1])
    texts = np.zeros((a32.size, width), np.uint8)
    for k, rows in zip(kinds, np.split(order, starts[1:])):
        if k >= 0:
            texts[rows, : len(LAYOUTS[k])] = chars[rows][:, LAYOUTS[k]]
    texts = texts.view(f"S{width}").ravel()
    if rest.size:
        values = _read_back(a32[rest], mantissa[rest], exponent[rest], digits[rest])
        texts[rest] = [repr(v).encode() for v in values.tolist()]
    return texts
