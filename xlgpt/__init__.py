"""xlgpt: compile GPT-2 into a workbook of plain spreadsheet formulas, and check it."""

__version__ = "0.1.0"


class XlgptError(Exception):
    """A problem with the user's input or environment: reported as one line, exit code 2."""
