import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_NAMES = ["tiny", "three_heads", "single_token", "full_context", "hf_layout"]


def xlgpt(*args, env=None, check=None):
    """Run the real command line in a subprocess; returns the CompletedProcess."""
    run = subprocess.run([sys.executable, "-m", "xlgpt", *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if check is not None:
        assert run.returncode == check, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    return run


def expected(name):
    """The logits transformers computed for a committed fixture."""
    data = json.loads((FIXTURES / name / "expected.json").read_text())
    return data["tokens"], np.array(data["logits"])


def tokens_arg(tokens):
    return ",".join(map(str, tokens))


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory):
    """A random checkpoint made by the CLI, shared by tests that only need some model."""
    path = tmp_path_factory.mktemp("ckpt") / "small"
    xlgpt("weights", "random", "--layers", 1, "--embd", 8, "--heads", 2, "--vocab", 20, "--context", 6,
          "--seed", 7, "--out", path, check=0)
    return path
