"""Deflate in pieces, as pigz does: each piece of a zip member is compressed on its own (by any process) and ends
on a byte boundary, so the pieces, one after the other, then an empty final block, are one deflate stream; the
member's CRC-32 is combined from the pieces' (zlib's crc32_combine, which Python's zlib does not expose).

Fast is Intel's ISA-L (isal), level 2: ~65 ns and ~9.1 bytes a weight cell (zlib's fastest level: ~210 ns and
~9.9 bytes); small is zlib's level 6: ~730 ns and ~8.2 bytes, for books that would not fit LibreOffice's limit."""

import zlib

from isal import isal_zlib

FINAL_BLOCK = zlib.compressobj(wbits=-15).flush()  # an empty last block: ends the stream
FAST_BYTES_PER_CELL = 9.1  # a weight with its address, deflated fast
SMALL_BYTES_PER_CELL = 8.3


def deflated(data, small=False):
    """(raw deflate of `data`, not final, ending on a byte boundary; its CRC-32; its length)."""
    library, level = (zlib, 6) if small else (isal_zlib, 2)
    compressor = library.compressobj(level, library.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(library.Z_SYNC_FLUSH), zlib.crc32(data), len(data)


POLY = 0xEDB88320  # CRC-32's polynomial, bit-reflected


def _times(a, b):
    """a * b modulo the polynomial (bit-reflected: bit 31 is x^0); a is not zero."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ POLY if b & 1 else b >> 1


X_POWERS = [1 << 30]  # x^(2^k) modulo the polynomial, k = 0..31
for _ in range(31):
    X_POWERS.append(_times(X_POWERS[-1], X_POWERS[-1]))


def crc32_combine(crc1, crc2, length2):
    """The CRC-32 of A + B from A's (crc1), B's (crc2) and B's length: crc1 moved past length2 bytes (times x^(8 *
    length2)), then B's."""
    shift, k = 1 << 31, 3  # x^0; bytes are 2^3 bits
    while length2:
        if length2 & 1:
            shift = _times(X_POWERS[k & 31], shift)
        length2 >>= 1
        k += 1
    return _times(shift, crc1) ^ crc2
