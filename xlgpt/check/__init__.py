"""Check: a written workbook in, a verdict out.

engines.py recalculates the file with a spreadsheet engine and reads the contract's names (contract.py);
reference.py computes the same numbers in NumPy, independently; verify.py compares the two.
"""
