"""Give IronCalc's wasm (wasm-bindgen, Rust, stack-first layout) a bigger shadow stack.

Stock @ironcalc/wasm 0.8.4 has a 1 MiB stack at [0, 1 MiB) (global 0 = __stack_pointer = 1048576) and 19 initial
pages. Rust's allocator on wasm32 (dlmalloc) only takes memory from memory.grow, i.e. above the initial size, so
adding N pages to the initial memory and pointing __stack_pointer at the new top gives a stack of N*64 KiB in
[old top, new top) that the heap never touches. Usage: patch_stack.py IN.wasm OUT.wasm MIB"""
import sys

def uleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F; n >>= 7
        if n: out.append(b | 0x80)
        else: out.append(b); return bytes(out)

def sleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F; n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40): out.append(b); return bytes(out)
        out.append(b | 0x80)

def read_uleb(b, i):
    r = s = 0
    while True:
        x = b[i]; i += 1; r |= (x & 0x7F) << s; s += 7
        if x < 0x80: return r, i

def read_sleb(b, i):
    r = s = 0
    while True:
        x = b[i]; i += 1; r |= (x & 0x7F) << s; s += 7
        if x < 0x80:
            return (r - (1 << s) if x & 0x40 else r), i

src, dst, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = open(src, "rb").read()
assert b[:8] == b"\0asm\1\0\0\0"
out, i, pages = bytearray(b[:8]), 8, None
sections = []
while i < len(b):
    sid = b[i]; size, j = read_uleb(b, i + 1); sections.append((sid, b[j:j + size])); i = j + size
extra = mib * 16
for sid, body in sections:
    if sid == 5:  # memory: one memory, flags, min [, max]
        n, k = read_uleb(body, 0); assert n == 1
        flags = body[k]; k += 1
        mn, k = read_uleb(body, k)
        pages = mn + extra
        body = uleb(1) + bytes([flags]) + uleb(pages) + body[k:]
    if sid == 6:  # globals: global 0 must be the mutable i32 __stack_pointer at the stack's top
        n, k = read_uleb(body, 0)
        t, mut, op = body[k], body[k + 1], body[k + 2]
        assert (t, mut, op) == (0x7F, 1, 0x41)
        sp, k2 = read_sleb(body, k + 3)
        assert body[k2] == 0x0B and sp == 1048576, sp
        assert pages is not None
        body = uleb(n) + bytes([t, mut, op]) + sleb(pages * 65536) + body[k2:]
    out += bytes([sid]) + uleb(len(body)) + body
open(dst, "wb").write(out)
print(f"{dst}: {pages} initial pages, stack pointer {pages * 65536} ({mib} MiB stack above the old initial memory)")
