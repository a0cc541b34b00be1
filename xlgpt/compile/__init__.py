"""Compile: a template (templates/*.toml) and a checkpoint in, sheets of cell blocks out.

template.py reads and checks the template into a spec; lower.py runs each stage's op (ops/) on the layout
(layout.py); build.py adds the tokenizer's tabs and hands the sheets to the writer (xlsx/).
"""
