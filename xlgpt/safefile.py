"""Every file xlgpt writes goes through here: checked before any work, written to a temporary name, renamed
into place.

- The temporary file (or directory) is created exclusively (tempfile.mkstemp / mkdtemp: O_CREAT|O_EXCL,
  a random name) in the target's directory, so a symlink planted at a name we might use is never followed,
  never written through and never deleted through: creating over it fails and we pick another name.
- It is removed on every exit path (an exception, Ctrl-C, and SIGTERM/SIGHUP, which cli.main turns into a
  clean exit so these finally-blocks run); the target appears whole (os.replace / rename) or not at all.
- check_output refuses, before any work, a target that is not a regular file (a directory, /dev/null, a
  FIFO, a socket), an input of the same command (a checkpoint file, a template), an existing file that is
  not an .xlsx workbook (config.json, notes.txt), and (given `marks`) a workbook that does not define those
  names: xlgpt replaces only its own workbooks, unless told to (--force).
"""

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

from xlgpt.package import XlgptError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_workbook(path):
    try:
        with zipfile.ZipFile(path) as zf:
            return "[Content_Types].xml" in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


MAX_WORKBOOK_XML = 16 << 20  # xl/workbook.xml (tabs and defined names): far above any real one
_DEFINED_NAME = re.compile(rb"<(?:\w+:)?definedName\b[^>]*?\bname\s*=\s*[\"']([^\"']*)[\"']")


def defined_names(path):
    """The defined names an .xlsx workbook's xl/workbook.xml declares (read with bounds: the file is the
    user's), or None when it cannot be read as one."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("xl/workbook.xml")
            if info.file_size > MAX_WORKBOOK_XML:
                return None
            with zf.open(info) as f:
                xml = f.read(MAX_WORKBOOK_XML + 1)
    except Exception:  # not a zip, no such part, a damaged or encrypted one (BadZipFile, zlib.error, ...)
        return None
    if len(xml) > MAX_WORKBOOK_XML:
        return None
    return {m.decode("utf-8", "replace") for m in _DEFINED_NAME.findall(xml)}


def check_output(out, inputs=(), what="workbook", marks=None):
    """Fail fast, before any heavy work, when `out` cannot or must not be written: see the module's rules.
    `inputs`: files (or directories, meaning every file in them) the command reads. `marks`: defined names
    an existing workbook must have for it to be replaced (the names only xlgpt's books define); None: any
    .xlsx workbook may be replaced."""
    out = Path(out)
    if str(out) == "":
        raise XlgptError("the output path is empty")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise XlgptError(f"{out}: directory {parent} does not exist")
    try:
        st = os.stat(out)  # follows a symlink: what would be replaced is the link, but refuse a link to a device too
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise XlgptError(f"{out}: cannot write ({e.strerror or e})")
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise XlgptError(f"{out}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise XlgptError(f"{out}: is not a regular file (a device, FIFO or socket); refusing to write to it")
        for source in inputs:
            if source is None:
                continue
            source = Path(source)
            files = [p for p in source.iterdir() if p.is_file()] if source.is_dir() else [source]
            if any(_same(out, f) for f in files):
                raise XlgptError(f"{out}: is an input of this command; refusing to overwrite it")
        if what == "workbook" and not _is_workbook(out):
            raise XlgptError(f"{out}: already exists and is not an .xlsx workbook; refusing to overwrite it")
        if what == "workbook" and marks and not set(marks) <= (defined_names(out) or set()):
            raise XlgptError(
                f"{out}: already exists and is not a workbook xlgpt wrote; refusing to overwrite it "
                f"(--force replaces it)"
            )
    if not os.access(parent, os.W_OK):
        raise XlgptError(f"{out}: directory {parent} is not writable")


@contextlib.contextmanager
def atomic_file(path):
    """Write `path` atomically: yields a binary file opened on a fresh temporary file beside it, renamed over
    `path` when the block succeeds, removed on any exit otherwise."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.absolute().parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise XlgptError(f"{path}: cannot write ({e.strerror or e})")
    done = False
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as an ordinary new file, not mkstemp's 0600
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
        os.replace(tmp, path)
        done = True
    except OSError as e:
        raise XlgptError(f"{path}: cannot write ({e.strerror or e})")
    finally:
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path):
    """Create directory `path` atomically: yields a fresh temporary directory beside it (mkdtemp), renamed to
    `path` when the block succeeds (over an empty directory, not over anything else), removed on any exit
    otherwise. Only what we created is ever removed."""
    path = Path(path)
    try:
        path.absolute().parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.absolute().parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise XlgptError(f"{path}: cannot create ({e.strerror or e})")
    done = False
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        os.rename(tmp, path)  # replaces an empty directory only; fails on a file, a link or a full directory
        done = True
    except OSError as e:
        raise XlgptError(f"{path}: cannot write ({e.strerror or e})")
    finally:
        if not done:
            shutil.rmtree(tmp, ignore_errors=True)  # our own directory; rmtree never follows links inside it


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_input_file(path, what="file"):
    """Refuse, with one line saying what it is instead, an input that is not a regular file: a directory, a
    FIFO (reading it could block forever), a device (/dev/zero never ends), a socket, a symbolic link loop or
    one pointing nowhere, a missing file. `what`: what the command wanted ("workbook")."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise XlgptError(f"{path}: is a symbolic link loop, not a {what}")
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise XlgptError(f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist")
        if e.errno == errno.ENOENT:
            raise XlgptError(f"{path}: no such file")
        raise XlgptError(f"{path}: cannot read ({e.strerror or e})")
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise XlgptError(f"{path}: is {kind}, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise XlgptError(f"{path}: is not a regular file, not a {what}")


# Small files read whole (config.json, a template, a prompts file): far above any real one.
MAX_SMALL_FILE = 16 << 20


def read_bounded(path, limit=MAX_SMALL_FILE, what="file"):
    """The bytes of a small regular file, refusing a FIFO or a device (which could block or never end), a
    directory, and a file larger than `limit` (by its size, and by what is actually read)."""
    path = Path(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise XlgptError(f"{path}: is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise XlgptError(f"{path}: is not a regular file (a device, FIFO or socket); not reading it")
        if st.st_size > limit:
            raise XlgptError(f"{path}: {st.st_size:,} bytes is too large for a {what} (limit {limit:,})")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise XlgptError(f"{path}: cannot read ({e.strerror or e})")
    if len(data) > limit:
        raise XlgptError(f"{path}: too large for a {what} (limit {limit:,} bytes)")
    return data


def announce(phase):
    """With XLGPT_ANNOUNCE set (tests do), write `xlgpt: phase: NAME` to stderr, flushed, as a command enters
    a phase (writing: the workbook's sheets; engine: LibreOffice or Gnumeric just started; step: a training
    step): a test that interrupts a running command waits for the phase it means instead of guessing it."""
    if os.environ.get("XLGPT_ANNOUNCE"):
        print(f"xlgpt: phase: {phase}", file=sys.stderr, flush=True)
