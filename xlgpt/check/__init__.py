"""Check: a written workbook in, a verdict out (xlgpt eval).

provenance.py first proves the book is what the compiler writes for what it records (recompiled in memory,
compared cell by cell); verify.py then has the engines (engines/) recalculate it and compares what they
compute with the NumPy reference (model/reference.py), computed independently.
"""
