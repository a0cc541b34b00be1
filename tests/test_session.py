"""LibreOffice through its UNO bridge: the session's lifecycle, eval across sheets, eval --prompts and
generate, each step checked against the reference."""

import json
import os
import re
import signal
import time
import zipfile

import numpy as np
import pytest

from helpers import assert_clean_error, xlgpt
from xlgpt.api import generation_book
from xlgpt.check.verify import reference_for
from xlgpt.compile.template import GENERATE_TEMPLATE
from xlgpt.drive.generate import generate
from xlgpt.engines.libreoffice import uno_values
from xlgpt.engines.process import clean_up_all
from xlgpt.engines.session import LibreOfficeSession, group_alive
from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book
from xlgpt.sheet.writer import copy_with_cell

pytestmark = pytest.mark.engines


def assert_gone(pgids, profile):
    assert not any(group_alive(g) for g in pgids), "a process of the session is still running"
    assert not os.path.exists(profile)


@pytest.fixture(scope="module")
def small_gen_book(small_ckpt, tmp_path_factory):
    """A generation book (token-ids, all 6 positions of the small model's context) with prompt 1,2."""
    out = tmp_path_factory.mktemp("gen") / "small.xlsx"
    r = xlgpt(
        "generate",
        "--weights",
        small_ckpt,
        "--tokens",
        "1,2",
        "--steps",
        1,
        "--positions",
        6,
        "--out",
        out,
        "--json",
        check=0,
    )
    assert json.loads(r.stdout)["match"]
    return out


def test_session_leaves_nothing_after_a_normal_exit(small_gen_book):
    with LibreOfficeSession(timeout=120) as lo:
        pgids, profile = list(lo.pgids), lo.profile
        assert all(group_alive(g) for g in pgids) and os.path.isdir(profile)
        book = lo.open(small_gen_book)
        assert book.read([C.TOKEN_IDS])[C.TOKEN_IDS][0].tolist() == [1, 2, 0, 0, 0, 0]
        book.set(C.TOKEN_IDS, 5, index=2)
        book.calculate()
        assert book.read([C.TOKEN_IDS])[C.TOKEN_IDS][0, 2] == 5
        book.close()
    assert_gone(pgids, profile)


def test_session_leaves_nothing_after_an_exception(small_gen_book):
    with pytest.raises(RuntimeError, match="the caller's own error"):
        with LibreOfficeSession(timeout=120) as lo:
            pgids, profile = list(lo.pgids), lo.profile
            lo.open(small_gen_book)
            raise RuntimeError("the caller's own error")
    assert_gone(pgids, profile)


def test_an_editable_book_leaves_no_lock_file_beside_it(small_gen_book, tmp_path):
    """xlgpt train opens its book editable, and the session ends by killing LibreOffice: no `.~lock.NAME#` may
    stay beside the user's book, nor stop the next session from opening it."""
    book = tmp_path / "book.xlsx"
    book.write_bytes(small_gen_book.read_bytes())
    for _ in range(2):
        with LibreOfficeSession(timeout=120) as lo:
            opened = lo.open(book, editable=True)
            assert opened.read([C.TOKEN_IDS])[C.TOKEN_IDS][0].tolist() == [1, 2, 0, 0, 0, 0]
        assert sorted(os.listdir(tmp_path)) == ["book.xlsx"]


def test_a_session_whose_cleanup_a_signal_skipped_is_stopped_on_the_way_out():
    """A signal can land after a `with` block's body and before its exit starts the cleanup (as one did in CI,
    right after a training run's last step): the interrupted exit then stops what is left."""
    lo = LibreOfficeSession(timeout=120).__enter__()  # and never __exit__
    pgids, profile = list(lo.pgids), lo.profile
    assert all(group_alive(g) for g in pgids) and os.path.isdir(profile)
    clean_up_all()
    assert_gone(pgids, profile)
    clean_up_all()  # nothing left to do


def test_killed_libreoffice_is_one_clean_error(small_gen_book):
    with LibreOfficeSession(timeout=60) as lo:
        pgids, profile = list(lo.pgids), lo.profile
        book = lo.open(small_gen_book)
        os.killpg(lo.soffice.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(XlgptError, match="LibreOffice"):
            book.set(C.TOKEN_IDS, 3, index=2)
            book.calculate()
            book.read([C.LOGITS])
        assert time.monotonic() - t0 < 30
        with pytest.raises(XlgptError, match="closed"):
            book.calculate()
    assert_gone(pgids, profile)


def test_a_hung_libreoffice_times_out(small_gen_book):
    with LibreOfficeSession(timeout=60) as lo:
        pgids, profile = list(lo.pgids), lo.profile
        book = lo.open(small_gen_book)
        lo.timeout = 2
        os.killpg(lo.soffice.pid, signal.SIGSTOP)  # alive but answering nothing
        with pytest.raises(XlgptError, match="within 2 s"):
            book.calculate(all=True)
    assert_gone(pgids, profile)


def test_missing_uno_bridge_is_a_clean_error(small_gen_book):
    run = xlgpt("generate", "--book", small_gen_book, "--engine", "libreoffice", env={"XLGPT_UNO_PYTHON": "/bin/false"})
    assert_clean_error(run, "install python3-uno (apt-get install python3-uno)")


def test_without_the_uno_bridge_generate_uses_ironcalc(small_gen_book):
    """--engine auto (the default) drives LibreOffice where its bridge is installed, else IronCalc."""
    run = xlgpt("generate", "--book", small_gen_book, "--steps", 2, env={"XLGPT_UNO_PYTHON": "/bin/false"})
    assert run.returncode == 0 and "tokens with ironcalc" in run.stdout and "agrees with the reference" in run.stdout


def test_reads_names_on_several_sheets(small_gen_book):
    book = read_book(small_gen_book)
    wanted = [C.TOKEN_IDS, C.LOGITS, C.PREDICTIONS, C.CHECKPOINT]
    assert len({book.names[n].sheet for n in wanted}) > 1
    values, stats = uno_values(book, wanted)
    _, expected = reference_for(book)
    assert np.abs(values[C.LOGITS] - expected[C.LOGITS]).max() < 1e-6
    assert values[C.TOKEN_IDS][0].tolist() == book.tokens
    assert np.isnan(values[C.CHECKPOINT][0, 0])  # text
    assert stats["seconds"] > 0 and stats["peak_rss_mb"] > 0


def test_generate_stops_when_the_context_is_full(small_ckpt):
    run = xlgpt("generate", "--weights", small_ckpt, "--tokens", "1,2", "--steps", 20, check=0)
    assert "4 tokens" in run.stdout and "the workbook is full (6 positions)" in run.stdout
    r = json.loads(xlgpt("generate", "--weights", small_ckpt, "--tokens", "1,2", "--json", check=0).stdout)
    assert r["context_full"] and len(r["tokens"]) == 4 and r["tokens"] == r["reference_tokens"]


def test_generate_names_the_step_that_disagrees(small_gen_book, tmp_path):
    info = read_book(small_gen_book)
    bad = tmp_path / "corrupt.xlsx"
    # one embedding weight (wte, tied to the unembedding) far off: every step's logits move
    copy_with_cell(small_gen_book, bad, info.sheets.index("Embeddings weights") + 1, 5, 3, 5.0)
    run = xlgpt("generate", "--book", bad, "--steps", 3, check=1)
    assert "MISMATCH at step 0" in run.stderr
    r = json.loads(xlgpt("generate", "--book", bad, "--steps", 3, "--json", check=1).stdout)
    assert r["first_mismatch"] == 0 and not r["match"]


def test_generate_refuses_sampling_without_sampler_cells(small_ckpt, tmp_path):
    """A token-ids book without the sampler's cells (a training book leaves them out) generates only the argmax."""
    book = tmp_path / "train.xlsx"
    xlgpt("build", "--train", "--weights", small_ckpt, "--tokens", "1,2,3", "--out", book, check=0)
    assert C.SAMPLED_TOKEN not in read_book(book).names
    assert_clean_error(
        xlgpt("generate", "--book", book, "--temperature", "0.8"),
        "train.xlsx: this workbook has no sampling cells (SampledToken)",
    )


def test_generate_refuses_a_bad_seed(small_gen_book):
    assert C.SAMPLED_TOKEN in read_book(small_gen_book).names  # a book that samples: the seed itself is refused
    assert_clean_error(
        xlgpt("generate", "--book", small_gen_book, "--temperature", "0.8", "--seed", "0"),
        "Seed must be a whole number",
    )


def test_generate_on_a_manual_calculation_book(small_ckpt, tmp_path):
    """generate computes only what it reads, through automatic calculation, which it turns on: a book saved
    with manual calculation (as a 124M one is) must give the reference's tokens all the same."""
    book = tmp_path / "manual.xlsx"
    xlgpt("build", "--weights", small_ckpt, "--tokens", "1,2,0,0,0,0", "--calc", "manual", "--out", book, check=0)
    r = json.loads(
        xlgpt(
            "generate",
            "--book",
            book,
            "--tokens",
            "1,2",
            "--steps",
            3,
            "--temperature",
            "0.8",
            "--seed",
            "7",
            "--json",
            check=0,
        ).stdout
    )
    assert r["match"] and len(r["tokens"]) == 3 and r["tokens"] == r["reference_tokens"]


def formula_cells(book):
    """(formula cells, those caching a result) over every sheet of an .xlsx."""
    cells = cached = 0
    with zipfile.ZipFile(book) as zf:
        for part in zf.namelist():
            if part.startswith("xl/worksheets/sheet"):
                for cell in re.findall(r"<c [^>]*>(.*?)</c>", zf.read(part).decode()):
                    if "<f" in cell:
                        cells += 1
                        cached += "<v>" in cell
    return cells, cached


@pytest.mark.parametrize("instruments", [False, True])
def test_the_book_generate_throws_away_caches_no_results_and_loads_uncomputed(small_ckpt, tmp_path, instruments):
    """generate's temporary book caches no formula results, so LibreOffice loads it without computing it (a
    kept one caches every result and is recomputed on load: a plain formula's cached result would stay where an
    array formula it reads changes). Each cell is computed when first read: every sampled step is the
    reference's."""
    book = tmp_path / "gen.xlsx"
    info, ids, _, weights = generation_book(small_ckpt, [1, 2], None, None, None, book, 4, instruments, cached=False)
    cells, cached = formula_cells(book)
    assert cells > 300 and cached == 0
    r = generate(info, ids, 4, "libreoffice", 0.8, 0, 7, weights, cached=False)
    assert r["match"] and len(r["tokens"]) == 4 and r["tokens"] == r["reference_tokens"]
    assert r["max_abs_logit_diff"] < 1e-6


def test_generate_builds_its_book_without_the_instruments(small_ckpt, tmp_path):
    lean, full = tmp_path / "lean.xlsx", tmp_path / "full.xlsx"
    xlgpt("generate", "--weights", small_ckpt, "--tokens", "1,2", "--steps", 2, "--out", lean, check=0)
    xlgpt("generate", "--weights", small_ckpt, "--tokens", "1,2", "--steps", 2, "--instruments", "--out", full, check=0)
    assert "Logit lens" not in read_book(lean).sheets and "Logit lens" in read_book(full).sheets
    xlgpt("eval", lean, "--engine", "libreoffice", "--template", GENERATE_TEMPLATE, check=0)
    run = xlgpt("eval", lean, "--engine", "libreoffice", check=1)
    assert "gpt2-generate.toml" in run.stdout + run.stderr
    run = xlgpt("generate", "--book", lean, "--instruments", check=2)
    assert run.stderr.strip() == "xlgpt: error: --instruments builds a workbook; it does not go with --book"


def test_generate_formulas_engine(small_ckpt):
    r = json.loads(
        xlgpt(
            "generate",
            "--weights",
            small_ckpt,
            "--tokens",
            "3",
            "--steps",
            2,
            "--engine",
            "formulas",
            "--json",
            check=0,
        ).stdout
    )
    assert r["match"] and len(r["tokens"]) == 2


# --- the bundled model -------------------------------------------------------------------------------


def test_generate_bundled_twenty_steps_match_the_reference():
    r = json.loads(xlgpt("generate", "--steps", 20, "--json", check=0).stdout)
    assert r["match"] and len(r["tokens"]) == 20 and r["tokens"] == r["reference_tokens"]
    assert r["max_abs_logit_diff"] < 1e-6 and r["text"]
    greedy = json.loads(xlgpt("predict", "--generate", 20, "--json", check=0).stdout)
    assert greedy["tokens"] == r["prompt_tokens"] and greedy["generated"] == r["tokens"]


def test_eval_prompts_on_the_default_book(tmp_path):
    book = tmp_path / "default.xlsx"
    xlgpt("build", "--out", book, check=0)
    prompts = tmp_path / "prompts.txt"
    texts = ["Shall I compare thee to a summer's", "O Romeo", "What light through yonder window breaks?"]
    prompts.write_text("\n".join(texts[:2]) + "\n\n" + texts[2] + "\n", encoding="utf-8")
    run = xlgpt("eval", book, "--prompts", prompts, "--engine", "libreoffice", "--json", check=0)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["prompt"] for r in results] == texts
    assert all(r["match"] and r["engine"] == "libreoffice" for r in results)
    assert xlgpt("eval", book, "--prompts", prompts, check=0).stdout.count("MATCH") == 3
