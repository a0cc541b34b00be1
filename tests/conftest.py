"""Fixtures, and a skip for a test that needs an engine this machine lacks; the shared helpers are in helpers.py."""

import os
import shutil

import pytest

from helpers import FIXTURES, expected, tokens_arg, xlgpt
from xlgpt.engines.session import system_python
from xlgpt.package import XlgptError


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory):
    """A random checkpoint made by the CLI, shared by tests that only need some model."""
    path = tmp_path_factory.mktemp("ckpt") / "small"
    xlgpt(
        "weights",
        "random",
        "--layers",
        1,
        "--embd",
        8,
        "--heads",
        2,
        "--vocab",
        20,
        "--context",
        6,
        "--seed",
        7,
        "--out",
        path,
        check=0,
    )
    return path


@pytest.fixture(scope="session")
def three_heads_book(tmp_path_factory):
    """The three_heads fixture's book, built by the CLI, shared by tests that only read it."""
    tokens, _ = expected("three_heads")
    path = tmp_path_factory.mktemp("three_heads") / "book.xlsx"
    xlgpt("build", "--weights", FIXTURES / "three_heads", "--tokens", tokens_arg(tokens), "--out", path, check=0)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XLGPT_HOME", str(tmp_path / "xlgpt"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    # huggingface_hub read its environment at import, before this test ran. xlgpt.weights.hub passes endpoint and
    # cache explicitly, but the client's User-Agent registry fetch uses the import-time endpoint and HF_HOME:
    # turn that telemetry off so no test reaches past loopback or writes outside tmp_path. (Subprocess
    # tests get a fresh import with the right environment and leave it on: the fake hub answers it.)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return tmp_path


def _uno_missing():
    try:
        system_python()
    except XlgptError:
        return True
    return False


# What xlgpt says when an engine is absent (engines/process.py, gnumeric.py, session.py), and whether it is.
ABSENT = {
    "LibreOffice is not installed": lambda: shutil.which("soffice") is None,
    "LibreOffice's Python bridge is missing": _uno_missing,
    "Gnumeric is not installed": lambda: shutil.which("ssconvert") is None,
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Outside CI, a test that failed because xlgpt found an engine missing (its own one-line error, in the
    failure) is reported as skipped, naming what to install; CI (CI=true) installs every engine and skips none."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or os.environ.get("CI"):
        return
    failure = str(report.longrepr)
    for message, absent in ABSENT.items():
        if message in failure and absent():
            report.outcome = "skipped"
            report.longrepr = (
                str(item.path),
                item.location[1] or 0,
                f"needs an engine: {message} here (make test installs it as root)",
            )
            return
