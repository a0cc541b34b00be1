"""Drive a live workbook: generate.py (a token at a time, each checked against the reference), train.py (the
copy-paste epoch, each step checked), steering.py (steering vectors for a new book)."""
