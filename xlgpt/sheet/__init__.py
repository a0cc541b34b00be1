"""The workbook as data, nothing of transformers: cells and blocks (cells.py), where every cell goes
(layout.py), every defined name (contract.py), Excel's limits (limits.py), styles, the streaming .xlsx writer
(writer.py), and reading a written book back (read.py, text.py).
"""
