"""Fixtures only; the shared helpers are in helpers.py."""
import pytest

from helpers import xlgpt


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory):
    """A random checkpoint made by the CLI, shared by tests that only need some model."""
    path = tmp_path_factory.mktemp("ckpt") / "small"
    xlgpt("weights", "random", "--layers", 1, "--embd", 8, "--heads", 2, "--vocab", 20, "--context", 6,
          "--seed", 7, "--out", path, check=0)
    return path
