"""The .xlsx file: sheets of blocks in, a streaming, deterministic, atomic zip of SpreadsheetML out.

writer.py knows XML and zip, nothing of transformers.
"""
