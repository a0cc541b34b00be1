"""Helpers shared by the test modules (fixtures live in conftest.py; no test module imports another)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
FIXTURE_NAMES = ["tiny", "three_heads", "single_token", "full_context", "hf_layout"]
BUNDLED = ROOT / "weights" / "shakespeare"


def xlgpt(*args, env=None, check=None):
    """Run the real command line in a subprocess; returns the CompletedProcess. The subprocess imports the
    xlgpt package of this checkout (PYTHONPATH), not some other installed copy, wherever pytest runs from."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    run = subprocess.run([sys.executable, "-m", "xlgpt", *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path, **(env or {})})
    if check is not None:
        assert run.returncode == check, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    return run


def expected(name):
    """The logits transformers computed for a committed fixture."""
    data = json.loads((FIXTURES / name / "expected.json").read_text())
    return data["tokens"], np.array(data["logits"])


def tokens_arg(tokens):
    return ",".join(map(str, tokens))


def assert_valid_ooxml(book):
    """The OOXML validator (openxml-audit, in the test extra) reports no errors: Excel would open it unrepaired."""
    import pytest

    pytest.importorskip("openxml_audit", reason="openxml-audit is in the test extra")
    run = subprocess.run([sys.executable, "-m", "openxml_audit", "--output", "json", str(book)],
                         capture_output=True, text=True)
    [report] = json.loads(run.stdout)
    assert report["error_count"] == 0, report["errors"]
    assert report["valid"] is True


def assert_clean_error(run, *words):
    """Bad input: exit code 2, one `xlgpt: error:` line on stderr holding every word, no traceback."""
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlgpt: error:"), run.stderr
    assert "Traceback" not in run.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
