"""What every layer may use: xlgpt's version, the error for the user's mistakes, the data folders it ships."""

from pathlib import Path

__version__ = "0.1.0"


class XlgptError(Exception):
    """A problem with the user's input or environment: reported as one line, exit code 2."""


def shipped(name):
    """A data folder shipped with xlgpt ("templates" or "weights"): inside the installed package (wheel),
    or at the top of a source checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "data" / name
    return installed if installed.is_dir() else package.parent / name
