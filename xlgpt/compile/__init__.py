"""Compile: a template (templates/*.toml) and a checkpoint in, sheets of cell blocks out.

template.py reads and checks the template into a spec; lower.py runs each stage's op (ops/, given a
context.Ctx) on the layout (sheet/layout.py); values.py computes every formula cell's cached value from the
formula itself (evaluate.py: Excel's functions on NumPy arrays); build.py's compile_book is the one entry, and
build() hands the sheets to the writer (sheet/writer.py).
"""
