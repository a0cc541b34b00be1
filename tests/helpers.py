"""Helpers shared by the test modules (fixtures live in conftest.py; no test module imports another)."""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
FIXTURE_NAMES = ["tiny", "three_heads", "single_token", "full_context", "hf_layout"]
BUNDLED = ROOT / "weights" / "shakespeare"


@dataclass
class Run:
    """What a run of the command line gave: returncode, stdout and stderr (text), as a CompletedProcess."""

    args: list
    returncode: int
    stdout: str
    stderr: str


def xlgpt(*args, env=None, check=None):
    """Run the command line in this process (xlgpt.cli.run, no interpreter start-up); returns a Run. stdout and
    stderr hold what the command wrote to sys.stdout/sys.stderr and to file descriptors 1 and 2 (a child
    process, a C library), and the warnings a fresh `python -m xlgpt` would show (Python's default filters).
    `env`: variables set for the duration of the run, for what xlgpt reads when it runs; a variable read at
    import, a signal, a real exit or leftover processes need a real process: xlgpt_process."""
    from xlgpt.cli import run as run_cli

    argv = [str(a) for a in args]
    with _environment(env or {}), _captured() as output, warnings.catch_warnings():
        warnings.resetwarnings()  # what a fresh interpreter shows, on stderr (not pytest's record)
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        code = run_cli(argv)
    run = Run(argv, code, output.stdout, output.stderr)
    if check is not None:
        assert run.returncode == check, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    return run


def xlgpt_process(*args, env=None, check=None, cwd=None, timeout=None):
    """Run the real command line in a subprocess; returns the CompletedProcess. The subprocess imports the
    xlgpt package of this checkout (PYTHONPATH), not some other installed copy, wherever pytest runs from."""
    run = subprocess.run(
        [sys.executable, "-m", "xlgpt", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=process_env(env),
    )
    if check is not None:
        assert run.returncode == check, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    return run


def process_env(env=None):
    """The environment of a subprocess running this checkout's xlgpt: os.environ, PYTHONPATH led by the
    checkout, and `env`."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **(env or {})}


@contextlib.contextmanager
def _environment(env):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _captured():
    """Capture sys.stdout/sys.stderr and file descriptors 1 and 2 (as pytest's capfd does) for one run;
    the text is on the yielded object's .stdout and .stderr once the block ends."""
    output = types.SimpleNamespace(stdout="", stderr="")
    texts = io.StringIO(), io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        saved = os.dup(1), os.dup(2)
        os.dup2(fd_out.fileno(), 1)
        os.dup2(fd_err.fileno(), 2)
        try:
            with contextlib.redirect_stdout(texts[0]), contextlib.redirect_stderr(texts[1]):
                yield output
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            written = []
            for f in (fd_out, fd_err):
                f.seek(0)
                written.append(f.read().decode(errors="replace"))
            output.stdout = texts[0].getvalue() + written[0]
            output.stderr = texts[1].getvalue() + written[1]


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
    run = subprocess.run(
        [sys.executable, "-m", "openxml_audit", "--output", "json", str(book)], capture_output=True, text=True
    )
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
