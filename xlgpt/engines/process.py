"""What every engine shares: running an office program in its own process group, the C locale, measuring
time and memory, reading a cell's text as a number."""

import contextlib
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from xlgpt.package import XlgptError


def peak_rss_mb(who=resource.RUSAGE_SELF):
    """The peak resident memory of this process (or of its waited-for children: RUSAGE_CHILDREN), in MB."""
    return round(resource.getrusage(who).ru_maxrss / 1024)


@contextlib.contextmanager
def peak_memory():
    """Measures wall time and the peak resident memory of this process or its children (MB)."""
    stats = {}
    t0 = time.perf_counter()
    yield stats
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    stats["peak_rss_mb"] = max(peak_rss_mb(resource.RUSAGE_SELF), peak_rss_mb(resource.RUSAGE_CHILDREN))


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


def group_members(pgids):
    """(pid, state) of every process whose process group is in `pgids` (state "Z": a zombie)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat_line[stat_line.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) in pgids:
            yield int(entry), fields[0]


def group_alive(pgid):
    """Whether any live (non-zombie) process is still in process group `pgid`."""
    return any(state != "Z" for _, state in group_members({pgid}))


# LibreOffice's pipes (its single-instance pipe, and the one --accept=pipe names) are Unix sockets that its
# runtime creates in /tmp (else /var/tmp) whatever TMPDIR says, named OSL_PIPE_<uid>_<name>; an office that
# is killed never unlinks them. Its scratch files do follow TMPDIR (into the session's own directory).
PIPE_DIRS = ("/tmp", "/var/tmp")


def office_pipes(pgids):
    """The paths of LibreOffice's pipes (OSL_PIPE_<uid>_*, in PIPE_DIRS) that live processes of the groups
    `pgids` hold: their open sockets' inodes (/proc/PID/fd), named in /proc/net/unix."""
    inodes = set()
    for pid, state in group_members(set(pgids)):
        if state == "Z":
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
            if m:
                inodes.add(m.group(1))
    try:
        table = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    prefix = f"OSL_PIPE_{os.getuid()}_"
    paths = set()
    for line in table:
        fields = line.split(None, 7)  # Num RefCount Protocol Flags Type St Inode Path
        if len(fields) == 8 and fields[6] in inodes:
            path = fields[7].strip()
            if os.path.dirname(path) in PIPE_DIRS and os.path.basename(path).startswith(prefix):
                paths.add(path)
    return paths


def remove_pipes(paths):
    """Unlink the sockets at `paths` (office_pipes' of a session whose processes are all gone): only a
    socket is ever removed, nothing else that may have taken its name."""
    for path in paths:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)


@contextlib.contextmanager
def signals_deferred(signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)):
    """Hold back the Python handlers of `signals` during the block (cleanup that must finish: killing an
    engine, removing its files) and run them after it, in the order the signals came: a signal then
    interrupts nothing half done. In the main thread only, where Python runs signal handlers (elsewhere the
    block runs as it is); signals ignored or left to the system are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending, saved = [], {}
    for sig in signals:
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum, frame in pending:
            saved[signum](signum, frame)


# What must not outlive xlgpt even when a signal cuts short the code that would clean it up (a signal can land
# between any two lines: after a `with` block's body and before its exit starts): key -> an idempotent cleanup.
_UNFINISHED = {}


def clean_up_later(key, cleanup):
    _UNFINISHED[key] = cleanup


def cleaned_up(key):
    _UNFINISHED.pop(key, None)


def clean_up_all():
    """Run every cleanup still registered, the latest first: what an interrupted xlgpt does before it exits."""
    with signals_deferred():
        while _UNFINISHED:
            _UNFINISHED.pop(next(reversed(_UNFINISHED)))()


def run_group(cmd, timeout, what, **popen):
    """Run `cmd` in its own process group (soffice forks soffice.bin) and kill the whole group when it
    times out or when this process leaves early (Ctrl-C, SIGTERM turned into SystemExit): nothing is left
    running. Returns stdout, stderr and the exit status."""

    def stop():
        with signals_deferred():
            pipes = office_pipes([proc.pid])  # a LibreOffice killed below leaves its pipes: noted first
            try:  # soffice.bin may outlive its launcher: take the group down in every case
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait()
            deadline = time.monotonic() + 10
            while pipes and group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            remove_pipes(pipes)
            cleaned_up(proc)

    with signals_deferred():
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **popen,
        )
        clean_up_later(proc, stop)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise XlgptError(f"{what} did not finish within {timeout} s")
    finally:
        stop()
    return Run(proc.returncode, out, err)


# The temporary profile's settings: recalculate every formula on load. A book set to manual calculation turns
