"""xlgpt: compile GPT-2 into a workbook of plain spreadsheet formulas, and check it."""
from xlgpt.package import XlgptError, __version__

__all__ = ["XlgptError", "__version__"]
