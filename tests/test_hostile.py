"""Hostile input and hostile environments: nothing destroyed, nothing wrong, nothing left behind.

Grouped by kind: locale, inputs destroyed, temporary files, books xlgpt wrote, forged books, resources
without bounds, interrupted work, one line instead of a traceback, smaller cases."""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import FIXTURES, ROOT, assert_clean_error, process_env, xlgpt, xlgpt_process
from xlgpt.sheet.read import read_book

TINY = FIXTURES / "tiny"


BUILT = {}  # the books this module builds once (per test process), by the arguments of build


@pytest.fixture(scope="module", autouse=True)
def built_books(tmp_path_factory):
    BUILT.clear()
    BUILT["folder"] = tmp_path_factory.mktemp("built")
    yield
    BUILT.clear()


def built_copy(tmp_path, name, *args):
    """tmp_path/name: a copy of the book `xlgpt build *args` makes (built the first time it is asked for), the
    test's own to change."""
    if args not in BUILT:
        BUILT[args] = BUILT["folder"] / f"{len(BUILT)}.xlsx"
        xlgpt("build", *args, "--out", BUILT[args], check=0)
    out = tmp_path / name
    shutil.copyfile(BUILT[args], out)
    return out


def build_tiny(tmp_path, name="book.xlsx"):
    """The tiny fixture's book, of tokens 1,2,3."""
    return built_copy(tmp_path, name, "--weights", TINY, "--tokens", "1,2,3")


def build_hi(tmp_path):
    """A prompt-cell book of the bundled model, its tokenizer's capacity fitted to the prompt 'hi'."""
    return built_copy(tmp_path, "book.xlsx", "--prompt", "hi", "--capacity", "fit")


# --- 1. a locale with a decimal comma --------------------------------------------------------------------

LOCALES = ["de_DE.UTF-8", "tr_TR.UTF-8"]  # a decimal comma; a dotless i. Neither need be installed.


@pytest.mark.engines
@pytest.mark.parametrize("lang", LOCALES)
def test_eval_verdict_does_not_depend_on_the_locale(tmp_path, lang):
    book = build_tiny(tmp_path)
    # a real process: an interpreter started in that locale
    run = xlgpt_process("eval", book, "--engine", "all", env={"LC_ALL": lang, "LANG": lang})
    assert run.returncode == 0 and run.stdout.count("MATCH") == 4, (run.stdout, run.stderr)


@pytest.mark.engines
@pytest.mark.parametrize("lang", LOCALES)
def test_libreoffice_csv_export_does_not_depend_on_the_locale(tmp_path, lang, monkeypatch):
    """LibreOffice's CSV export writes "1,5" in a decimal-comma locale (installed or not), read back as NaN:
    the export runs in the C locale."""
    import numpy as np

    from xlgpt.check.verify import reference_for
    from xlgpt.engines.libreoffice import libreoffice_values
    from xlgpt.sheet import contract as C
    from xlgpt.sheet.read import read_book

    book = read_book(build_tiny(tmp_path))
    monkeypatch.setenv("LC_ALL", lang)
    monkeypatch.setenv("LANG", lang)
    values, _ = libreoffice_values(book, [C.LOGITS], via="csv")
    _, want = reference_for(book)
    assert np.abs(values[C.LOGITS] - want[C.LOGITS]).max() < 1e-6


# --- 2. inputs destroyed -------------------------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path):
    """A copy of the tiny checkpoint the test may try to destroy."""
    return Path(shutil.copytree(TINY, tmp_path / "ckpt"))


def snapshot(*paths):
    return {p: p.read_bytes() for p in paths}


@pytest.mark.parametrize("target", ["model.safetensors", "config.json"])
def test_build_refuses_to_overwrite_its_checkpoint(ckpt, target):
    before = snapshot(*ckpt.iterdir())
    run = xlgpt("build", "--weights", ckpt, "--tokens", "1,2", "--out", ckpt / target)
    assert_clean_error(run, "input of this command")
    assert snapshot(*ckpt.iterdir()) == before


def test_build_refuses_to_overwrite_its_template(ckpt, tmp_path):
    template = tmp_path / "gpt2.toml"
    template.write_bytes((ROOT / "templates" / "gpt2.toml").read_bytes())
    before = template.read_bytes()
    run = xlgpt("build", "--weights", ckpt, "--tokens", "1,2", "--template", template, "--out", template)
    assert_clean_error(run, "input of this command")
    assert template.read_bytes() == before


def test_build_refuses_to_overwrite_a_file_that_is_not_a_workbook(ckpt, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert_clean_error(xlgpt("build", "--weights", ckpt, "--tokens", "1,2", "--out", notes), "not an .xlsx")
    assert notes.read_text() == "keep me"


def test_build_replaces_a_workbook(ckpt, tmp_path):
    out = tmp_path / "book.xlsx"
    xlgpt("build", "--weights", ckpt, "--tokens", "1,2", "--out", out, check=0)
    first = out.read_bytes()
    assert read_book(out).tokens == [1, 2]
    xlgpt("build", "--weights", ckpt, "--tokens", "2,1,3", "--out", out, check=0)
    assert read_book(out).tokens == [2, 1, 3] and out.read_bytes() != first  # the new book, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.xlsx", "ckpt"]  # no temporary file left


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "link to a device"])
def test_build_refuses_what_is_not_a_regular_file(ckpt, tmp_path, kind):
    out = {
        "device": Path("/dev/null"),
        "fifo": tmp_path / "fifo",
        "directory": tmp_path / "dir",
        "link to a device": tmp_path / "link.xlsx",
    }[kind]
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "directory":
        out.mkdir()
    elif kind == "link to a device":
        out.symlink_to("/dev/null")
    run = xlgpt("build", "--weights", ckpt, "--tokens", "1,2", "--out", out)
    assert_clean_error(run, str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ckpt"] + ([out.name] if kind != "device" else []))


# --- 3. temporary files ----------------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path):
    """A directory and a file an attacker points symlinks at: nothing in them may change."""
    d = tmp_path / "victim"
    d.mkdir()
    (d / "precious.txt").write_text("precious")
    return d


def predict_temp_names(monkeypatch, names):
    """Make tempfile try `names` first (a name an attacker guessed), then random ones."""
    import tempfile

    real = tempfile._get_candidate_names

    def candidates():
        rest = real()
        yield from names
        while True:
            yield next(rest)

    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: candidates())


def run_in_process(*args):
    from click.testing import CliRunner

    from xlgpt.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_weights_random_follows_no_planted_symlink(tmp_path, victim, monkeypatch):
    out = tmp_path / "ckpt"
    os.symlink(victim, tmp_path / f".ckpt.tmp-{os.getpid()}")  # the old predictable name
    os.symlink(victim, tmp_path / ".ckpt.guessed.tmp")  # the name tempfile will try first
    predict_temp_names(monkeypatch, ["guessed"])
    result = run_in_process(
        "weights",
        "random",
        "--layers",
        "1",
        "--embd",
        "8",
        "--heads",
        "2",
        "--vocab",
        "20",
        "--context",
        "4",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.") and not p.is_symlink()]


def test_build_writes_through_no_planted_symlink(tmp_path, victim, monkeypatch):
    out, target = tmp_path / "book.xlsx", victim / "precious.txt"
    os.symlink(target, tmp_path / f".book.xlsx.{os.getpid()}.tmp")  # the old predictable name
    os.symlink(target, tmp_path / ".book.xlsx.guessed.tmp")
    predict_temp_names(monkeypatch, ["guessed"])
    result = run_in_process("build", "--weights", TINY, "--tokens", "1,2,3", "--out", out)
    assert result.exit_code == 0, result.output
    assert target.read_text() == "precious" and sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    import zipfile

    assert zipfile.is_zipfile(out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".book.xlsx.") and not p.is_symlink()]
    assert leftovers == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """An exception mid-write (here: the disk fills up) removes the temporary file; the old book stays."""
    from xlgpt.package import XlgptError
    from xlgpt.sheet import writer

    out = build_tiny(tmp_path)
    before = out.read_bytes()

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_write_parts", full)
    with pytest.raises(XlgptError, match="No space left"):
        writer.write_workbook(out, [], {})
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.xlsx"]


def test_an_interrupt_while_a_part_opens_comes_out_as_itself(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, raised as cli.Terminated) just as the writer opens a part of the zip: the interruption
    itself reaches cli.main (click turns a KeyboardInterrupt into Abort), which prints its one line; the old book
    stays and no temporary file is left."""
    import zipfile

    import click

    out = build_tiny(tmp_path)
    before = out.read_bytes()
    real, calls = zipfile._get_compressor, []

    def interrupted(*args, **kwargs):  # the moment a part is opened for writing, its compressor made
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(zipfile, "_get_compressor", interrupted)
    with pytest.raises(click.exceptions.Abort):
        xlgpt("build", "--weights", TINY, "--tokens", "1,2,3", "--out", out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.xlsx"]


# --- 4. eval reads the Prompt cell of books xlgpt wrote --------------------------------------------------

ODD_PROMPTS = ["=1+1", "a\tb\r\nc", "tab\there", "bell\x07 and\x1f", "end\ufffe", "_x0041_ is A", '"=SUM(A1)"']


@pytest.mark.parametrize(  # each builds a book (~3 s): two in the fast loop, the rest in the slow suite
    "text", [p if k < 2 else pytest.param(p, marks=pytest.mark.engines) for k, p in enumerate(ODD_PROMPTS)]
)
def test_read_book_gives_the_prompt_as_typed(tmp_path, text):
    from xlgpt.sheet.read import read_book

    out = tmp_path / "book.xlsx"
    xlgpt("build", "--prompt", text, "--capacity", "fit", "--out", out, check=0)
    assert read_book(out).prompt == text


def test_prompt_formula_parser_takes_only_what_xlgpt_writes():
    from xlgpt.sheet.text import prompt_from_formula, prompt_value

    for text in ODD_PROMPTS:
        written = prompt_value(text)
        assert prompt_from_formula("=" + written) == text or written == text
    for formula in ['="a"&WEBSERVICE("http://x")', '=CHAR(65)&"b"', '="a"&"b"', "=1+1", '="a"&CHAR(10)&', "=CHAR(999)"]:
        assert prompt_from_formula(formula) is None, formula


def test_a_prompt_formula_xlgpt_does_not_write_is_refused(tmp_path):
    from xlgpt.sheet.contract import PROMPT
    from xlgpt.sheet.read import read_book
    from xlgpt.sheet.writer import Formula, copy_with_cell

    book = build_hi(tmp_path)
    info = read_book(book)
    ref = info.names[PROMPT]
    forged = tmp_path / "forged.xlsx"
    copy_with_cell(book, forged, info.sheets.index(ref.sheet) + 1, ref.top, ref.left, Formula('WEBSERVICE("http://x")'))
    assert_clean_error(xlgpt("eval", forged, "--engine", "libreoffice"), "formula xlgpt does not write")


@pytest.mark.engines
@pytest.mark.parametrize("text", ["=1+1", "a\tb\r\nc", "bell\x07", "end\ufffe", "_x0041_"])
def test_eval_matches_a_book_built_from_an_odd_prompt(tmp_path, text):
    out = tmp_path / "book.xlsx"
    xlgpt("build", "--prompt", text, "--capacity", "fit", "--out", out, check=0)
    run = xlgpt("eval", out, "--engine", "libreoffice")
    assert run.returncode == 0 and "MATCH" in run.stdout, (run.stdout, run.stderr)


@pytest.mark.engines
def test_eval_types_an_odd_prompt(tmp_path):
    out = tmp_path / "book.xlsx"
    xlgpt("build", "--prompt", "Romeo", "--capacity", "24,48,8", "--positions", "8", "--out", out, check=0)
    for text in ["=1+1", "x\ty\nz"]:
        run = xlgpt("eval", out, "--engine", "libreoffice", "--prompt", text)
        assert run.returncode == 0 and "MATCH" in run.stdout, (text, run.stdout, run.stderr)


# --- 5. forged books: eval proves the book computes its results ------------------------------------------


def rewrite_part(book, out, part, edit, extra=None):
    """Copy `book` to `out` with `part` (a member name) passed through edit(text) -> text; `extra`: {name: text}
    parts to add."""
    import zipfile

    with zipfile.ZipFile(book) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info.filename, edit(data.decode()).encode() if info.filename == part else data)
        for name, text in (extra or {}).items():
            zout.writestr(name, text)
    return out


def sheet_part(info, name):
    return f"xl/worksheets/sheet{info.sheets.index(info.names[name].sheet) + 1}.xml"


def forge_logits(book, out):
    """The Logits formulas removed, their cached values (the reference's) left as constants: the book shows the
    right answer and computes nothing."""
    import re

    from xlgpt.sheet import contract as C
    from xlgpt.sheet.cells import column_letter

    info = read_book(book)
    rect = info.names[C.LOGITS]
    columns = "|".join(column_letter(rect.left + j) for j in range(rect.width))

    def edit(xml):
        # each position's array formula starts at the top of its column of Logits
        xml, n = re.subn(
            rf'<c r="((?:{columns}){rect.top})" t="n"><f t="array" ref="[^"]*">[^<]*</f>(<v>[^<]*</v>)</c>',
            r'<c r="\1">\2</c>',
            xml,
        )
        assert n == rect.width
        return xml

    return rewrite_part(book, out, sheet_part(info, C.LOGITS), edit)


def test_forged_logits_fail_before_any_engine(tmp_path):
    book = build_tiny(tmp_path)
    forged = forge_logits(book, tmp_path / "forged.xlsx")
    run = xlgpt("eval", forged, "--engine", "ironcalc")
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert (
        "MISMATCH" in run.stdout
        and "Output!C" in run.stdout
        and "constant where the compiler writes a formula" in run.stdout
    ), run.stdout


@pytest.mark.parametrize("formula", ['WEBSERVICE("http://example.com/")', "'[other.xlsx]Output'!C64", "1+1"])
def test_a_formula_the_compiler_does_not_write_fails(tmp_path, formula):
    from xlgpt.sheet import contract as C

    book = build_tiny(tmp_path)
    info = read_book(book)
    forged = rewrite_part(
        book, tmp_path / "forged.xlsx", sheet_part(info, C.LOGITS), lambda xml: xml.replace("<f>", f"<f>{formula}+", 1)
    )
    run = xlgpt("eval", forged, "--engine", "ironcalc")
    assert run.returncode == 1 and "the formula is not the compiler's" in run.stdout, (run.stdout, run.stderr)


def test_an_external_link_part_fails(tmp_path):
    book = build_tiny(tmp_path)
    forged = rewrite_part(
        book, tmp_path / "forged.xlsx", None, None, {"xl/externalLinks/externalLink1.xml": "<externalLink/>"}
    )
    run = xlgpt("eval", forged, "--engine", "ironcalc")
    assert run.returncode == 1 and "externalLink1.xml is not one xlgpt writes" in run.stdout, run.stdout


def test_a_repointed_name_fails(tmp_path):
    """Logits pointed one column to the right (at the next position's logits, or at constants)."""
    import re

    book = build_tiny(tmp_path)
    shift = lambda m: m.group(1) + chr(ord(m.group(2)) + 1)
    forged = rewrite_part(
        book,
        tmp_path / "forged.xlsx",
        "xl/workbook.xml",
        lambda xml: re.sub(r'(<definedName name="Logits">[^<]*?\$)([A-Z])', shift, xml, count=1),
    )
    run = xlgpt("eval", forged, "--engine", "ironcalc")
    assert run.returncode == 1 and "the defined name Logits is not the compiler's" in run.stdout, (
        run.stdout,
        run.stderr,
    )


def test_typed_input_cells_may_differ(tmp_path):
    """A person's edits to input cells (token ids, here) are no forgery: eval checks them with the reference.
    Written without recalculating (no spreadsheet saved it), the book still shows the old results until it is
    recalculated: eval says so (its cached values), while the engine computes the reference's."""
    from xlgpt.sheet import contract as C
    from xlgpt.sheet.styles import INPUT
    from xlgpt.sheet.writer import copy_with_cell

    book = build_tiny(tmp_path)
    info = read_book(book)
    ref = info.names[C.TOKEN_IDS]
    edited = tmp_path / "edited.xlsx"
    copy_with_cell(book, edited, info.sheets.index(ref.sheet) + 1, ref.top, ref.left + 1, 7, INPUT)
    run = xlgpt("eval", edited, "--engine", "ironcalc", "--json")
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert max(result["checks"].values()) < 1e-9 and result["display_difference"] is None, result
    assert run.returncode == 1 and "its cached value" in result["cached_difference"], result


# --- 7. interrupted work leaves nothing ---------------------------------------------------------------


def leftover_processes(pgid, text):
    """pids of live processes in process group `pgid` (the command and its forked workers) or whose command
    line mentions `text` (a test's private TMPDIR: LibreOffice's profile, Gnumeric's files)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp
            except OSError:
                continue
            if (text in cmd or int(fields[2]) == pgid) and fields[0] != "Z":
                found.append(int(entry))
    return found


def terminal_signals():
    """Signals as a terminal's foreground job has them, whatever the test run inherited: a shell's background job
    (`make test &`) ignores SIGINT, and Python then installs no KeyboardInterrupt for it."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def start(*args, tmpdir):
    """xlgpt in a real process, in its own session (as a terminal's foreground job), announcing its phases."""
    return subprocess.Popen(
        [sys.executable, "-m", "xlgpt", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=terminal_signals,
        env=process_env({"TMPDIR": str(tmpdir), "XLGPT_ANNOUNCE": "1"}),
    )


def wait_for_phase(run, phase, seconds=120):
    """Read the running command's stderr, line by line, until it announces `phase` (`xlgpt: phase: NAME`,
    XLGPT_ANNOUNCE), for at most `seconds`; every line before it must be an announcement too. Returns the
    bytes read past that line."""
    fd, got = run.stderr.fileno(), b""
    deadline = time.monotonic() + seconds
    while True:
        while b"\n" in got:
            line, got = got.split(b"\n", 1)
            assert line.startswith(b"xlgpt: phase: "), (phase, line)
            if line == f"xlgpt: phase: {phase}".encode():
                return got
        left = deadline - time.monotonic()
        assert left > 0, f"no phase {phase!r} within {seconds} s"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            assert chunk, f"exit {run.wait()} before the phase {phase!r}: {got.decode(errors='replace')}"
            got += chunk


def interrupt(run, sig, rest):
    """Send `sig` to the command's whole process group (as a terminal's Ctrl-C reaches the foreground job)
    and return its stderr from there on; `rest`: what wait_for_phase read past the phase."""
    os.killpg(run.pid, sig)
    _, err = run.communicate(timeout=60)
    return (rest + err).decode(errors="replace")


def assert_one_line(err, sig):
    """The one line an interrupted command prints (after Ctrl-C, click first ends the terminal's `^C` line:
    the empty line before it)."""
    message = "interrupted" if sig == signal.SIGINT else f"terminated ({signal.Signals(sig).name})"
    assert err.strip().splitlines() == [f"xlgpt: error: {message}"], err


def assert_nothing_left(run, tmpdir, seconds=30):
    """Within `seconds`, no process of the command's group and none mentioning `tmpdir` is alive; then
    `tmpdir` holds nothing."""
    deadline = time.monotonic() + seconds
    while left := leftover_processes(run.pid, str(tmpdir)):
        assert time.monotonic() < deadline, f"still running after {seconds} s: {left}"
        time.sleep(0.1)
    assert list(tmpdir.iterdir()) == []


@pytest.mark.engines
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_an_interrupted_eval_leaves_no_libreoffice_running(tmp_path, sig):
    book = build_tiny(tmp_path)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run = start("eval", book, "--engine", "libreoffice", tmpdir=tmpdir)
    rest = wait_for_phase(run, "engine")  # LibreOffice started
    err = interrupt(run, sig, rest)
    assert run.returncode == 128 + sig, (run.returncode, err)
    assert_one_line(err, sig)
    assert_nothing_left(run, tmpdir)


@pytest.mark.engines
def test_an_interrupted_training_run_leaves_nothing(tmp_path):
    """SIGTERM during a step of xlgpt train: one line, no output directory, no LibreOffice, no temporary files."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "trained"
    run = start("train", "--steps", "50", "--out", out, tmpdir=tmpdir)
    rest = wait_for_phase(run, "step", seconds=300)  # the training book built, LibreOffice started, a step begun
    err = interrupt(run, signal.SIGTERM, rest)
    assert run.returncode == 128 + signal.SIGTERM, (run.returncode, err)
    assert_one_line(err, signal.SIGTERM)
    assert_nothing_left(run, tmpdir)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["tmp"]


@pytest.mark.engines
def test_eval_timeout_leaves_no_libreoffice_running(tmp_path):
    """--timeout bounds each request to LibreOffice after its start-up: the default book (the bundled model,
    hundreds of thousands of formulas) takes LibreOffice several seconds to open and calculate on any machine,
    so a 1 s limit stops eval with one line, and nothing is left running."""
    book = tmp_path / "book.xlsx"
    xlgpt("build", "--out", book, check=0)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    run = start("eval", book, "--engine", "libreoffice", "--timeout", "1", tmpdir=tmpdir)
    _, err = run.communicate(timeout=300)
    err = err.decode(errors="replace")
    lines = [line for line in err.splitlines() if not line.startswith("xlgpt: phase: ")]
    assert run.returncode == 2 and lines == ["xlgpt: error: LibreOffice did not finish open within 1 s"], err
    assert_nothing_left(run, tmpdir)


@pytest.fixture(scope="module")
def big_ckpt(tmp_path_factory):
    """A checkpoint whose book is big enough (4M cells) for the writer's parallel workers and a few seconds."""
    out = tmp_path_factory.mktemp("big") / "ckpt"
    xlgpt(
        "weights",
        "random",
        "--layers",
        "2",
        "--embd",
        "256",
        "--vocab",
        "9000",
        "--context",
        "16",
        "--out",
        out,
        check=0,
    )
    return out


@pytest.mark.engines
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_an_interrupted_build_leaves_no_file_and_prints_one_line(tmp_path, big_ckpt, sig):
    out = tmp_path / "book.xlsx"
    run = start("build", "--weights", big_ckpt, "--tokens", "1,2,3", "--out", out, tmpdir=tmp_path)
    rest = wait_for_phase(run, "writing")  # the sheets going into the temporary file, by the forked workers
    assert list(tmp_path.glob(".book.xlsx.*.tmp"))
    err = interrupt(run, sig, rest)
    assert run.returncode == 128 + sig, err
    assert_one_line(err, sig)
    assert_nothing_left(run, tmp_path)


# --- 6. resources without bounds ------------------------------------------------------------------------


def test_a_zip_bomb_is_refused_before_it_is_read(tmp_path):
    import zipfile

    book = build_tiny(tmp_path)
    with (
        zipfile.ZipFile(book, "a", zipfile.ZIP_DEFLATED) as zf,
        zf.open("xl/worksheets/sheet99.xml", "w", force_zip64=True) as f,
    ):
        zero = bytes(1 << 20)
        for _ in range(300):  # 300 MB of zeros in ~300 kB: the 1000:1 of a bomb
            f.write(zero)
    assert book.stat().st_size < 2 << 20
    assert_clean_error(xlgpt("eval", book, "--engine", "formulas"), "zip bomb")


def test_a_defined_name_spanning_a_whole_sheet_is_refused(tmp_path):
    import re

    book = build_tiny(tmp_path)
    forged = rewrite_part(
        book,
        tmp_path / "forged.xlsx",
        "xl/workbook.xml",
        lambda xml: re.sub(r'(<definedName name="TokenIds">)[^<]*', r"\1Tokens!$A$1:$XFD$1048576", xml),
    )
    assert_clean_error(xlgpt("eval", forged, "--engine", "formulas"), "TokenIds", "cells")


@pytest.mark.parametrize(
    "kind",
    ["fifo", "/dev/zero", "directory", "huge n_layer", "infinite epsilon", "nested", "huge vocabulary", "huge file"],
)
def test_a_hostile_config_is_refused(ckpt, kind):
    config = ckpt / "config.json"
    raw = json.loads(config.read_text())
    config.unlink()
    if kind == "fifo":
        os.mkfifo(config)  # reading it would block forever
    elif kind == "/dev/zero":
        config.symlink_to("/dev/zero")  # reading it would never end
    elif kind == "directory":
        config.mkdir()
    elif kind == "nested":
        config.write_text("[" * 50_000 + "]" * 50_000)
    elif kind == "huge file":
        config.write_text(" " * (2 << 20) + json.dumps(raw))
    else:
        key, value = {
            "huge n_layer": ("n_layer", 10**9),
            "infinite epsilon": ("layer_norm_epsilon", float("inf")),
            "huge vocabulary": ("vocab_size", 2**21),
        }[kind]
        config.write_text(json.dumps({**raw, key: value}))
    args = ("predict", "--weights", ckpt, "--tokens", "1")
    # a config that would never end being read: a real process, so a regression times out instead of hanging
    run = xlgpt_process(*args, timeout=60) if kind in ("fifo", "/dev/zero") else xlgpt(*args)
    assert_clean_error(run, "config")


@pytest.mark.parametrize("capacity", ["100000000,512,100", "256,512,100000000", "256,100000000,100"])
def test_a_capacity_beyond_the_sheet_is_refused(tmp_path, capacity):
    out = tmp_path / "book.xlsx"
    assert_clean_error(xlgpt("build", "--prompt", "hi", "--capacity", capacity, "--out", out), "16,384")
    assert not out.exists()


def test_weights_random_refuses_a_shape_beyond_the_sheet(tmp_path):
    out = tmp_path / "ckpt"
    assert_clean_error(xlgpt("weights", "random", "--layers", "1000000000", "--out", out), "parameters")
    assert_clean_error(xlgpt("weights", "random", "--context", "100000", "--out", out), "n_positions")
    assert not out.exists()


# --- 8. one line, not a traceback ------------------------------------------------------------------------


def damaged(tmp_path, kind):
    book = build_tiny(tmp_path)
    out = tmp_path / "damaged.xlsx"
    if kind == "missing sheet part":
        import zipfile

        with zipfile.ZipFile(book) as zin, zipfile.ZipFile(out, "w") as zout:
            for info in zin.infolist():
                if info.filename != "xl/worksheets/sheet3.xml":
                    zout.writestr(info, zin.read(info))
        return out
    part, edit = {
        "malformed workbook.xml": ("xl/workbook.xml", lambda x: x[:-20]),
        "malformed sheet": ("xl/worksheets/sheet3.xml", lambda x: x[:-20]),
        "malformed shared strings": ("xl/sharedStrings.xml", lambda x: x[:-20]),
        "name to a missing tab": (
            "xl/workbook.xml",
            lambda x: x.replace('<definedName name="TokenIds">Tokens!', '<definedName name="TokenIds">Nowhere!'),
        ),
        "missing tab": ("xl/workbook.xml", lambda x: x.replace('<sheet name="Embeddings"', '<sheet name="Gone"')),
    }[kind]
    return rewrite_part(book, out, part, edit)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("missing sheet part", ["the tab 'Embeddings' has no part xl/worksheets/sheet3.xml"]),
        ("malformed workbook.xml", ["not an .xlsx workbook, or a damaged one"]),
        ("malformed sheet", ["xl/worksheets/sheet3.xml: malformed XML"]),
        ("malformed shared strings", ["not an .xlsx workbook, or a damaged one"]),
        ("name to a missing tab", ["the defined name TokenIds points at a tab 'Nowhere'"]),
    ],
)
def test_a_damaged_book_is_one_line(tmp_path, kind, words):
    """A book that cannot be read is bad input (sheet/read.py raises XlgptError): exit 2, one line."""
    assert_clean_error(xlgpt("eval", damaged(tmp_path, kind), "--engine", "ironcalc"), *words)


def test_a_book_with_a_renamed_tab_is_a_mismatch(tmp_path):
    """A book that reads but whose tabs are not the compiler's is eval's verdict, not bad input
    (check/provenance.py raises NotCompiled): MISMATCH and exit 1, before any engine."""
    run = xlgpt("eval", damaged(tmp_path, "missing tab"), "--engine", "ironcalc")
    assert run.returncode == 1 and run.stderr == "", (run.returncode, run.stdout, run.stderr)
    assert "MISMATCH" in run.stdout and "the tabs are not the compiler's" in run.stdout, run.stdout


@pytest.mark.engines
def test_a_book_name_with_brackets_works_with_the_formulas_engine(tmp_path):
    book = build_tiny(tmp_path, name="book [v2] 'draft'.xlsx")
    run = xlgpt("eval", book, "--engine", "ironcalc")
    assert run.returncode == 0 and "MATCH" in run.stdout, run.stderr


@pytest.mark.engines
def test_a_weight_cell_holding_text_is_a_mismatch(tmp_path):
    from xlgpt.sheet.writer import copy_with_cell

    book = build_tiny(tmp_path)
    info = read_book(book)
    edited = tmp_path / "edited.xlsx"
    copy_with_cell(book, edited, info.sheets.index("Embeddings weights") + 1, 5, 3, "oops")
    run = xlgpt("eval", edited, "--engine", "ironcalc")
    assert run.returncode == 1 and "MISMATCH" in run.stdout and "Traceback" not in run.stderr, run.stderr


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("Checkpoint", 12.5, ["not found"]),
        ("Checkpoint", "", ["does not say which checkpoint"]),
        ("WeightsSha256", "abc", ["sha256"]),
        ("CapacityCharacters", "lots", ["capacity"]),
        ("CapacityTokens", 10**6, ["capacity"]),
    ],
)
def test_an_edited_metadata_cell_is_one_line(tmp_path, name, value, words):
    from xlgpt.sheet.writer import copy_with_cell

    book = build_hi(tmp_path)
    info = read_book(book)
    ref = info.names[name]
    edited = tmp_path / "edited.xlsx"
    copy_with_cell(book, edited, info.sheets.index(ref.sheet) + 1, ref.top, ref.left, value)
    assert_clean_error(xlgpt("eval", edited, "--engine", "libreoffice"), *words)


def test_a_lone_surrogate_in_a_prompt_is_one_line(tmp_path):
    out = tmp_path / "book.xlsx"
    # a real process: the argument arrives as bytes that are not UTF-8, decoded as a lone surrogate
    run = subprocess.run(
        [sys.executable.encode(), b"-m", b"xlgpt", b"build", b"--prompt", b"caf\xe9", b"--out", bytes(out)],
        capture_output=True,
        text=True,
        env=process_env(),
    )
    assert_clean_error(run, "lone surrogate")
    assert not out.exists()


def test_a_full_tmpdir_is_one_line(tmp_path, monkeypatch):
    """TMPDIR on a full disk: any OSError of the environment is one line."""
    book = build_tiny(tmp_path)

    def full(*a, **k):
        raise OSError(28, "No space left on device", "/tmp/xlgpt-eval-x")

    monkeypatch.setattr("tempfile.mkdtemp", full)
    assert_clean_error(xlgpt("eval", book, "--engine", "formulas"), "/tmp/xlgpt-eval-x: No space left on device")


def test_float8_safetensors_is_one_line(ckpt):
    import struct

    raw = (ckpt / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    for k, v in header.items():
        if k != "__metadata__":
            v["dtype"] = "F8_E4M3"
    head = json.dumps(header).encode()
    (ckpt / "model.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n :])
    assert_clean_error(xlgpt("predict", "--weights", ckpt, "--tokens", "1"), "F8_E4M3")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--out", "."], ["new directory"]),
        (["--seed", "-1", "--out", "x"], ["--seed"]),
        (["--out", "ckpt"], ["not an empty directory"]),
    ],
)
def test_weights_random_bad_arguments_are_one_line(tmp_path, monkeypatch, args, words):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "keep.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    assert_clean_error(xlgpt("weights", "random", *args), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"] and (tmp_path / "ckpt" / "keep.txt").exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ("[[stage]]\ntab = 'a[b'\nname = 'x'\nop = 'embed'\n", ["cannot name a sheet"]),
        ("[[stage]]\ntab = 'Layer: one'\nname = 'x'\nop = 'embed'\n", ["cannot name a sheet"]),
        ("[[stage]]\ntab = '" + "x" * 40 + "'\nname = 'x'\nop = 'embed'\n", ["cannot name a sheet"]),
        ("stage = 3\n", ["stage"]),
        ("[[stage]]\nfoo = 1\n", ["unknown key"]),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", ["TOML"]),
        ("\xff\xfe", ["template"]),
        ("a = ", ["TOML"]),
    ],
)
def test_a_malformed_template_is_one_line(tmp_path, text, words):
    template = tmp_path / "bad.toml"
    template.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    run = xlgpt("build", "--weights", TINY, "--tokens", "1", "--template", template, "--out", tmp_path / "b.xlsx")
    assert_clean_error(run, *words)


# --- 9. smaller ------------------------------------------------------------------------------------------


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("XLGPT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("ref", ["../../../outside", "../../../outside/", "/abs/outside", "a" * 39 + "/"])
def test_a_poisoned_hub_ref_is_not_followed(caches, ref):
    from xlgpt.model.hub import resolve
    from xlgpt.package import XlgptError

    outside = Path(shutil.copytree(TINY, caches / "outside"))
    repo = caches / "hub" / "models--someone--model"
    (repo / "snapshots").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(ref.replace("/abs/outside", str(outside)))
    os.symlink(outside, repo / "snapshots" / ("b" * 40))  # a snapshot that is a link out of the cache
    with pytest.raises(XlgptError, match="not in the cache"):
        resolve("someone/model")


def test_empty_weights_is_refused(tmp_path):
    assert_clean_error(xlgpt("predict", "--weights", "", "--tokens", "1"), "--weights is empty")
    assert_clean_error(xlgpt("build", "--weights", "", "--out", tmp_path / "b.xlsx"), "--weights is empty")
    book = build_tiny(tmp_path)
    assert_clean_error(xlgpt("eval", book, "--weights", "", "--engine", "formulas"), "--weights is empty")


def test_a_damaged_imported_model_is_reported_as_damaged_not_missing(caches):
    model = caches / "home" / "models" / "mine"
    shutil.copytree(TINY, model)
    (model / "model.safetensors").write_bytes(b"\x08" + bytes(7) + b"not json")
    assert_clean_error(xlgpt("predict", "--weights", "mine", "--tokens", "1"), "model.safetensors", "cannot read")


@pytest.mark.parametrize(
    "tab", ["a[b]", "x:y", "what?", "a/b", "a\\\\b", "bell\\u0007", "star*", "x" * 32, "'quoted'", "History", " "]
)
def test_template_tab_names_a_sheet_cannot_hold_are_refused(tmp_path, tab):
    template = tmp_path / "t.toml"
    text = (ROOT / "templates" / "gpt2.toml").read_text()
    import re

    text, n = re.subn(r'tab = "[^"]*"', lambda m: f'tab = "{tab}"', text, count=1)
    assert n == 1
    template.write_text(text)
    run = xlgpt("build", "--weights", TINY, "--tokens", "1", "--template", template, "--out", tmp_path / "b.xlsx")
    assert_clean_error(run, "cannot name a sheet")
    assert not (tmp_path / "b.xlsx").exists()


def test_a_foreign_conditional_format_formula_fails(tmp_path):
    from xlgpt.sheet import contract as C

    book = build_tiny(tmp_path)
    info = read_book(book)
    rule = (
        '<conditionalFormatting sqref="A1"><cfRule type="expression" dxfId="0" priority="99">'
        '<formula>WEBSERVICE("http://example.com/")</formula></cfRule></conditionalFormatting>'
    )
    forged = rewrite_part(
        book,
        tmp_path / "forged.xlsx",
        sheet_part(info, C.LOGITS),
        lambda xml: xml.replace("</sheetData>", "</sheetData>" + rule, 1),
    )
    run = xlgpt("eval", forged, "--engine", "ironcalc")
    assert run.returncode == 1 and "conditional format" in run.stdout, (run.stdout, run.stderr)
