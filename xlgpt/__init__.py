"""xlgpt: compile GPT-2 into a workbook of plain spreadsheet formulas, and prove it computes the right thing.

    import xlgpt
    xlgpt.build("book.xlsx", prompt="O Romeo, Romeo, wherefore art")
    xlgpt.evaluate("book.xlsx", engine="libreoffice")

The layers, top to bottom (each imports only from those below it; lint-imports checks it):
    cli.py           the command line: parse, call the API, print
    api.py           everything the command line does, as Python functions
    drive/           runs a live workbook: generation, training, steering vectors
    check/           eval: a written book's formulas, then its values, against the reference
    compile/ engines/  template -> spec -> lowered blocks of cells (ops/ one per op) | spreadsheet programs
    tokenizer/       GPT-2's BPE: in Python, and as tabs of a book
    sheet/ model/    the workbook as data (cells, layout, writer, reader) | GPT-2 without sheets (checkpoints,
                     hub, SAE, the NumPy reference and its backward pass)
    safefile.py decimals.py package.py   files written safely, numbers as a book holds them, the error type
"""

from xlgpt.api import build, continue_greedily, evaluate, features, generate, predict, tokenize, train
from xlgpt.package import XlgptError, __version__

__all__ = [
    "build",
    "evaluate",
    "generate",
    "train",
    "predict",
    "continue_greedily",
    "tokenize",
    "features",
    "XlgptError",
    "__version__",
]
