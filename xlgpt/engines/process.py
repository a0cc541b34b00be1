"""What every engine shares: running an office program in its own process group, the C locale, measuring
time and memory, reading a cell's text as a number."""

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from xlgpt.package import XlgptError


@contextlib.contextmanager
def peak_memory():
    """Measures wall time and the peak resident memory of this process or its children (MB)."""
    stats = {}
    t0 = time.perf_counter()
    yield stats
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    stats["peak_rss_mb"] = round(peak / 1024)


def as_float(value):
    try:
        if isinstance(value, str) and value.endswith("%"):  # LibreOffice's CSV keeps a percentage's sign
            return float(value[:-1]) / 100
        return float(value)
    except (TypeError, ValueError):
        return float("nan")  # an error value such as #VALUE! or Err:502


def find_soffice():
    exe = shutil.which("soffice") or shutil.which("libreoffice")
    if not exe:
        raise XlgptError(
            "LibreOffice is not installed (no 'soffice' on PATH); install it, e.g. "
            "apt-get install libreoffice-calc-nogui, or use --engine formulas"
        )
    return exe


# Engines run in the C locale: LibreOffice's CSV export writes numbers with the decimal separator of the
# locale it runs in (LC_ALL=de_DE.UTF-8 gives "1,5", read back as NaN), whether or not the system has that
# locale installed; the formulas engine and the UNO bridge pass numbers as doubles.
C_LOCALE = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "LANGUAGE": "C"}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_group(cmd, timeout, what, **popen):
    """Run `cmd` in its own process group (soffice forks soffice.bin) and kill the whole group when it
    times out or when this process leaves early (Ctrl-C, SIGTERM turned into SystemExit): nothing is left
    running. Returns stdout, stderr and the exit status."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise XlgptError(f"{what} did not finish within {timeout} s")
    finally:
        try:  # soffice.bin may outlive its launcher: take the group down in every case
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait()
    return Run(proc.returncode, out, err)


# The temporary profile's settings: recalculate every formula on load. A book set to manual calculation turns
