"""A live LibreOffice, driven through its Python-UNO bridge: load a book once, then edit, recalculate and
read it as often as needed (eval --prompts, generate).

The project's Python cannot import uno; the system Python (/usr/bin/python3 with Debian's python3-uno) can.
So a session starts two processes, each in its own process group:
    soffice --headless --accept=pipe,name=<unique>;urp;   with a private profile directory
    /usr/bin/python3 uno_worker.py                         which connects to it and speaks JSON lines
and on leaving the `with` block (normally, on an exception, on Ctrl-C or a timeout) kills both groups and
removes the profile. Numbers come through UNO as doubles, so nothing depends on a locale.

    with LibreOfficeSession(timeout=600) as lo:
        book = lo.open("book.xlsx")
        book.set("TokenIds", 42, index=3)
        book.calculate()
        values = book.read(["Logits", "Predictions"])   # {name: 2-D float array, NaN for errors and text}
"""

import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from xlgpt.engines.process import (
    C_LOCALE,
    PIPE_DIRS,
    clean_up_later,
    cleaned_up,
    find_soffice,
    group_alive,
    group_members,
    office_pipes,
    remove_pipes,
    signals_deferred,
)
from xlgpt.package import XlgptError
from xlgpt.safefile import announce

SYSTEM_PYTHON = "/usr/bin/python3"
WORKER = Path(__file__).with_name("uno_worker.py")
UNO_MISSING = "LibreOffice's Python bridge is missing: install python3-uno (apt-get install python3-uno)"


def system_python():
    """The Python that can import uno (XLGPT_UNO_PYTHON overrides /usr/bin/python3)."""
    exe = os.environ.get("XLGPT_UNO_PYTHON", SYSTEM_PYTHON)
    try:
        ok = subprocess.run([exe, "-c", "import uno"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise XlgptError(UNO_MISSING)
    return exe


def _kill_group(proc):
    """SIGKILL the process group `proc` leads (soffice's launcher and soffice.bin share it) and reap it."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _remove_tree(path, seconds=30):
    """Remove our own directory tree; again, for a while, if something still being killed wrote into it."""
    deadline = time.monotonic() + seconds
    shutil.rmtree(path, ignore_errors=True)
    while os.path.lexists(path) and time.monotonic() < deadline:
        time.sleep(0.2)
        shutil.rmtree(path, ignore_errors=True)


class LibreOfficeSession:
    """A private headless LibreOffice and a UNO worker talking to it. `timeout`: seconds any one request
    (start-up, load, calculate, read) may take before the session is killed with a clean error."""

    def __init__(self, timeout=3600, start_timeout=120):
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.soffice = self.worker = self.profile = None
        self.pgids = []
        self.pipes = set()  # LibreOffice's pipes (sockets in /tmp): removed with the session

    # --- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        exe = find_soffice()
        python = system_python()
        with signals_deferred():  # a signal lands after all three are recorded, so stop() finds them
            self._spawn(exe, python)
        announce("engine")
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.worker.stdout, selectors.EVENT_READ)
        self._buffer = b""
        self.request("connect", timeout=self.start_timeout, _wait=self.start_timeout + 10)
        self.pipes |= office_pipes(self.pgids)

    def _spawn(self, exe, python):
        clean_up_later(self, self.stop)
        self.profile = tempfile.mkdtemp(prefix="xlgpt-uno-")
        pipe = f"xlgpt-{os.getpid()}-{secrets.token_hex(8)}"
        # the --accept pipe's socket, by its name (office_pipes finds it, and the single-instance one, by inode)
        self.pipes.update(f"{d}/OSL_PIPE_{os.getuid()}_{pipe}" for d in PIPE_DIRS)
        self.soffice = subprocess.Popen(
            [
                exe,
                "--headless",
                "--invisible",
                "--norestore",
                "--nologo",
                "--nodefault",
                "--nolockcheck",
                f"--accept=pipe,name={pipe};urp;",
                f"-env:UserInstallation=file://{self.profile}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # no system file locks (nor, set by the worker in the profile, .~lock files): a killed session leaves
            # none behind, and another's lock cannot stop a load
            # the C locale: what the sheet computes never depends on the user's locale (as with the CSV export)
            # its scratch files (lu*.tmp) go into the profile directory, removed even if soffice is killed
            env={**os.environ, **C_LOCALE, "SAL_ENABLE_FILE_LOCKING": "0", "TMPDIR": self.profile},
        )
        self.pgids.append(self.soffice.pid)
        self.worker = subprocess.Popen(
            [python, str(WORKER), f"pipe,name={pipe};urp", str(self.soffice.pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **C_LOCALE},
        )
        self.pgids.append(self.worker.pid)

    def stop(self):
        """Kill everything this session started and remove its profile and LibreOffice's pipes; safe to call
        twice. A signal arriving meanwhile (SIGTERM, Ctrl-C) waits until all that is done."""
        with signals_deferred():
            try:
                self._stop()
            finally:
                if self.profile:
                    _remove_tree(self.profile)
                    self.profile = None
                cleaned_up(self)

    def _stop(self):
        if self.worker is not None and self.worker.stdin:
            try:
                self.worker.stdin.close()
            except OSError:
                pass
        self.pipes |= office_pipes(self.pgids)
        _kill_group(self.worker)
        _kill_group(self.soffice)
        deadline = time.monotonic() + 10  # soffice.bin, reparented when its launcher dies, goes a moment later
        while self.pgids and any(group_alive(g) for g in self.pgids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.worker is not None and self.worker.stdout:
            self.worker.stdout.close()
        self.worker = self.soffice = None
        if not any(group_alive(g) for g in self.pgids):  # nothing of ours holds them any more
            remove_pipes(self.pipes)
            self.pipes = set()

    def peak_rss_mb(self):
        """The largest peak resident memory (VmHWM) among the session's live processes, in MB."""
        peak = 0
        for pid, _ in group_members(set(self.pgids)):
            try:
                m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            except OSError:
                continue
            peak = max(peak, int(m.group(1)) if m else 0)
        return round(peak / 1024)

    # --- requests -------------------------------------------------------------------------------------
    def request(self, op, _wait=None, **args):
        """Send one request and wait for its reply (at most `timeout` seconds; LibreOffice dying or a
        timeout stops the session and raises XlgptError)."""
        if self.worker is None:
            raise XlgptError("the LibreOffice session is closed")
        wait = _wait or self.timeout
        try:
            self.worker.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
            self.worker.stdin.flush()
        except OSError:
            self._fail(f"LibreOffice's UNO worker stopped before {op}")
        deadline = time.monotonic() + wait
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"LibreOffice did not finish {op} within {wait} s")
            if self.soffice.poll() is not None:
                # soffice's launcher may exit while soffice.bin runs on; only the group tells
                if not group_alive(self.soffice.pid):
                    self._fail(f"LibreOffice exited during {op}")
            if not self._selector.select(timeout=min(left, 0.5)):
                continue
            chunk = os.read(self.worker.stdout.fileno(), 1 << 20)
            if not chunk:
                self._fail(f"LibreOffice's UNO worker exited during {op}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply = json.loads(line)
        if not reply["ok"]:
            error = reply["error"]
            if "DisposedException" in error or "RuntimeException" in error and "Binary URP bridge" in error:
                self._fail(f"LibreOffice exited during {op}")
            raise XlgptError(f"LibreOffice: {op} failed: {error}")
        return reply["result"]

    def _fail(self, message):
        self.stop()
        raise XlgptError(message)

    def open(self, path, editable=False, recalc=True):
        """Load a workbook (hidden; never saved). Returns a Book. `editable`: for Book.put and Book.copy, which
        write ranges. `recalc`: every formula computed on load; False only for a book whose formula cells cache
        no results, which then loads in the time of parsing it, each cell computed when first read."""
        path = Path(path).resolve()
        if not path.is_file():
            raise XlgptError(f"{path}: no such file")
        t0 = time.perf_counter()
        result = self.request("open", path=str(path), editable=editable, recalc=recalc)
        return Book(self, result["doc"], path, result["sheets"], time.perf_counter() - t0)


def _as_array(values, errors):
    """A read range's values as a 2-D float array: NaN for text, empty cells and errors."""
    out = np.full((len(values), len(values[0]) if values else 0), np.nan)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i, j] = v
    return out


def _set_args(name_or_ref, value, index=None):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(name_or_ref, tuple):
        sheet, row, col = name_or_ref
        return {"value": value, "sheet": sheet, "row": int(row), "col": int(col)}
    where = {"value": value, "name": name_or_ref}
    if index is not None:
        where["index"] = list(map(int, index)) if isinstance(index, (tuple, list)) else int(index)
    return where


def _read_args(names):
    names = list(names)
    return {"names": [n for n in names if "." not in n], "ranges": [n for n in names if "." in n]}


def _read_result(result, raw):
    if raw:
        return {k: (v["values"], [tuple(e) for e in v["errors"]]) for k, v in result.items()}
    return {k: _as_array(v["values"], v["errors"]) for k, v in result.items()}


class Book:
    """A workbook open in a LibreOfficeSession."""

    def __init__(self, session, handle, path, sheets, load_seconds):
        self.session, self.handle, self.path, self.sheets = session, handle, path, sheets
        self.load_seconds = load_seconds

    def set(self, name_or_ref, value, index=None):
        """Set one cell: a defined name (its first cell, or the cell at `index`: a position in a one-row or
        one-column name, or (row, col), 0-based), or a (sheet, row, col) tuple (0-based). A str is stored
        as text, exactly as given; a number as a number."""
        self.session.request("set", doc=self.handle, **_set_args(name_or_ref, value, index))

    def put(self, name, rows):
        """Write numbers over a whole defined name (rows of values, the name's shape)."""
        self.session.request("put", doc=self.handle, name=name, values=np.asarray(rows, dtype=float).tolist())

    def copy(self, pairs):
        """Copy each (source, target) defined name's values over the target's cells, inside LibreOffice."""
        self.session.request("copy", doc=self.handle, pairs=[list(p) for p in pairs])

    def calculate(self, all=False):
        """Recalculate: only what depends on edited cells (calculate()), or everything (calculateAll()).
        Returns the seconds LibreOffice took."""
        return self.session.request("calculate", doc=self.handle, all=all)["seconds"]

    def read(self, names, raw=False):
        """{name: 2-D float array (NaN for errors, text and empty cells)} for defined names, or for
        "Sheet.A1:B2" ranges (a "." in the key). raw=True: {name: (rows of floats/str/None, errors)} with
        errors as (row, col, LibreOffice error code)."""
        return _read_result(self.session.request("read", doc=self.handle, **_read_args(names)), raw)

    def read_rects(self, rects):
        """layout.Rects, in one request: a 2-D float array each."""
        keys = [f"{r.sheet}.{r.corners()}" for r in rects]
        values = self.read(dict.fromkeys(keys)) if keys else {}
        return [values[k] for k in keys]

    def batch(self, sets, names, raw=False):
        """Set cells (each (name_or_ref, value, index) as in set), then read `names` as read does, in one round
        trip. Without calculate(): LibreOffice computes what is read, and what it reads, and no more (cells
        nobody reads, such as a generation book's padding columns, wait)."""
        requests = [{"op": "set", **_set_args(*s)} for s in sets] + [{"op": "read", **_read_args(names)}]
        return _read_result(self.session.request("batch", doc=self.handle, requests=requests)[-1], raw)

    def close(self):
        self.session.request("close", doc=self.handle)
