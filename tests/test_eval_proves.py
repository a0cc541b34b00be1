"""eval proves what the reader sees (issue #24): a book whose constants, displayed formats, settings or cached values
are not what xlgpt writes for its checkpoint and tokenizer does not MATCH; a right book does; config.json fields
xlgpt does not compute are refused; the formulas engine samples; a damaged part is one line.

Each forged book is a copy of a real book with one part edited as a person (or a tool) would, and each verdict
comes from the command line, as a user sees it."""

import json
import re
import shutil
import zipfile

import numpy as np
import pytest

from helpers import FIXTURES, assert_clean_error, xlgpt
from xlgpt.sheet import contract as C
from xlgpt.sheet.cells import cell_name, quote_sheet
from xlgpt.sheet.layout import Rect
from xlgpt.sheet.read import read_book
from xlgpt.sheet.writer import copy_with_cell

TINY = FIXTURES / "tiny"
BOOKS = {}  # the books this module builds once, by their build arguments


@pytest.fixture(scope="module", autouse=True)
def books_folder(tmp_path_factory):
    BOOKS.clear()
    BOOKS["folder"] = tmp_path_factory.mktemp("books")
    yield
    BOOKS.clear()


def book(tmp_path, *args, name="book.xlsx"):
    """A copy of the book `xlgpt build *args` writes (built once per module), the test's own to change."""
    if args not in BOOKS:
        BOOKS[args] = BOOKS["folder"] / f"{len(BOOKS)}.xlsx"
        xlgpt("build", *args, "--out", BOOKS[args], check=0)
    out = tmp_path / name
    shutil.copyfile(BOOKS[args], out)
    return out


def tiny(tmp_path, *options):
    """The tiny fixture (2 layers, 16 features, 40 tokens, context 8), tokens 1,2,3: the formulas engine takes
    it in a few seconds."""
    return book(tmp_path, "--weights", TINY, "--tokens", "1,2,3", *options)


def typed(tmp_path):
    """The bundled model's Prompt-cell book of 'hi' (its tokenizer tables: Merges, Byte symbols, Unicode
    classes; the Vocabulary)."""
    return book(tmp_path, "--prompt", "hi", "--capacity", "fit")


def rewrite(src, out, edits):
    """A copy of `src` with parts changed: {part: edit(text) -> text}; each edit must change its part."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename in edits:
                text = edits[info.filename](data.decode())
                assert text != data.decode(), info.filename
                data = text.encode()
            zout.writestr(info.filename, data)
    return out


def part_of(info, sheet):
    return f"xl/worksheets/sheet{info.sheets.index(sheet) + 1}.xml"


def where(rect):
    """'Tab'!A1 of a one-cell Rect, as eval names a cell."""
    return f"{quote_sheet(rect.sheet)}!{cell_name(rect.top, rect.left)}"


def set_cell(src, out, rect, value):
    """A copy of `src` with the one cell `rect` holding `value` (a number or a text), as xlgpt's own writer
    writes a cell."""
    info = read_book(src)
    copy_with_cell(src, out, info.sheets.index(rect.sheet) + 1, rect.top, rect.left, value)
    return out


def cell_xml(xml, rect):
    m = re.search(rf'<c r="{cell_name(rect.top, rect.left)}"[^>]*?(?:/>|>.*?</c>)', xml)
    assert m, rect
    return m


def evaluate(path, *options, engine="ironcalc"):
    return xlgpt("eval", path, "--engine", engine, *options)


def assert_mismatch(run, *words):
    """eval's MISMATCH: exit 1, the words in what it printed, no error line."""
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    assert "MISMATCH" in run.stdout and "Traceback" not in run.stderr, (run.stdout, run.stderr)
    for w in words:
        assert w in run.stdout, (w, run.stdout)


# --- a right book --------------------------------------------------------------------------------------


def test_a_right_book_matches_with_nothing_to_report(tmp_path):
    run = evaluate(tiny(tmp_path), "--json")
    assert run.returncode == 0, (run.stdout, run.stderr)
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert result["match"] and result["cached_difference"] is None and result["display_difference"] is None


@pytest.mark.parametrize(
    "args",
    [
        ("--prompt", "hi", "--capacity", "fit"),  # Prompt cell: tokenizer tabs and tables
        pytest.param(("--no-prompt-cell",), marks=pytest.mark.engines),  # the default prompt's ids (slow: ~7 s)
        # a steered book: its note (slow: ~7 s)
        pytest.param(("--steer-from", " thee", "--steer-to", " you", "--capacity", "fit"), marks=pytest.mark.engines),
        # a training book: its backward tabs recalculated by the formulas engine (~8 s: with the engines)
        pytest.param(("--train", "--optimizer", "adamw", "--prompt", "Shall I"), marks=pytest.mark.engines),
        ("--weights", FIXTURES / "tiny", "--tokens", "1,2", "--calc", "manual"),
    ],
    ids=["prompt", "tokens", "steered", "training", "manual"],
)
def test_right_books_are_the_compilers_in_every_cell(tmp_path, args):
    """Every constant, format and setting of a right book is the compiler's (no engine needed to say so)."""
    from xlgpt.check import verify
    from xlgpt.tokenizer import hf

    info = read_book(book(tmp_path, *args))
    ckpt = verify.checkpoint_for(info)
    _, found = verify.check_provenance(info, ckpt, hf.for_checkpoint(ckpt))
    assert found.displays == []
    cached = found.cached[C.LOGITS]
    assert cached.shape == (info.names[C.LOGITS].height, info.names[C.LOGITS].width)
    assert all(isinstance(v, float) for v in cached.ravel())


@pytest.mark.engines
def test_a_book_xlgpt_train_wrote_is_the_compilers(tmp_path):
    """Its Adam moments and loss history are what the book records, not the compiler's starting zeros."""
    from xlgpt.check import verify
    from xlgpt.tokenizer import hf

    xlgpt("train", "--steps", 2, "--window", 8, "--out", tmp_path / "trained", check=0)
    info = read_book(tmp_path / "trained" / "train.xlsx")
    assert info.training["moments"] and any(
        v for grid in info.training["moments"].values() for row in grid for v in row
    )
    ckpt = verify.checkpoint_for(info)
    _, found = verify.check_provenance(info, ckpt, hf.for_checkpoint(ckpt))
    assert found.displays == []


# --- constants: weights and the tokenizer's tables -------------------------------------------------------


@pytest.mark.parametrize(
    "tensor, index, why",
    [
        ("wpe.weight", (6, 2), "a padding position's wpe row: no formula of a 3-token book reads it"),
        ("h.0.attn.c_attn.bias", (16 + 3,), "a key bias: softmax cancels it"),
        ("wte.weight", (33, 5), "a token the prompt does not hold"),
        ("h.1.ln_2.weight", (4,), "a LayerNorm gain"),
    ],
)
def test_a_changed_weight_is_a_mismatch_naming_the_cell(tmp_path, tensor, index, why):
    path = tiny(tmp_path)
    info = read_book(path)
    name, transposed = C.weight_name_in(info.names, tensor)
    rect = info.names[name]
    i, j = (index + (0,))[:2]
    cell = rect.cell(j, i) if transposed else rect.cell(i, j)
    run = evaluate(set_cell(path, tmp_path / "forged.xlsx", cell, 0.123456))
    assert_mismatch(run, where(cell), "0.123456", "the checkpoint's value")


@pytest.mark.parametrize(
    "name, index, value",
    [
        (C.VOCABULARY, (352, 0), " thou"),  # the predicted text of another token
        # like the one above (each ~4 s: the slow suite)
        pytest.param(C.MERGE_TABLE, (10, 0), None, marks=pytest.mark.engines),
        pytest.param(C.BYTE_TABLE, (65, 1), None, marks=pytest.mark.engines),
        pytest.param(C.CLASS_TABLE, (100, 1), None, marks=pytest.mark.engines),
    ],
)
def test_a_changed_tokenizer_table_is_a_mismatch_naming_the_cell(tmp_path, name, index, value):
    path = typed(tmp_path)
    info = read_book(path)
    cell = info.names[name].cell(*index)
    import openpyxl

    held = openpyxl.load_workbook(path, read_only=True)[cell.sheet].cell(cell.top, cell.left).value
    value = value if value is not None else (held + 1 if isinstance(held, int) else str(held) + "x")
    assert value != held
    run = evaluate(set_cell(path, tmp_path / "forged.xlsx", cell, value))  # found before any engine runs
    assert_mismatch(run, where(cell), repr(value) if isinstance(value, str) else str(value))


def test_a_changed_label_is_a_mismatch(tmp_path):
    """The text a reader reads beside the numbers (here: the Output tab's title) is the compiler's too."""
    run = evaluate(set_cell(tiny(tmp_path), tmp_path / "forged.xlsx", Rect("Output", 1, 1), "Logits, certified"))
    assert_mismatch(run, "Output!A1", "certified")


# --- cached values: what the book shows before it is recalculated ---------------------------------------


def forge_cached(src, out, rect, value):
    """`rect` (a formula cell, or one an array formula fills) caching `value` instead of what it computes."""
    info = read_book(src)

    def edit(xml):
        m = cell_xml(xml, rect)
        cell = re.sub(r"<v>[^<]*</v>", f"<v>{value}</v>", m.group())
        assert cell != m.group()
        return xml[: m.start()] + cell + xml[m.end() :]

    return rewrite(src, out, {part_of(info, rect.sheet): edit})


def predicted_cell(path):
    return read_book(path).names[C.PREDICTED_TOKEN]


def forged_prediction(tmp_path, path):
    import openpyxl

    cell = predicted_cell(path)
    shown = openpyxl.load_workbook(path, data_only=True)[cell.sheet].cell(cell.top, cell.left).value
    value = 5 if shown != 5 else 6
    return forge_cached(path, tmp_path / "forged.xlsx", cell, value), cell, value


def test_a_forged_cached_prediction_is_a_mismatch(tmp_path):
    forged, cell, value = forged_prediction(tmp_path, tiny(tmp_path))
    run = evaluate(forged)
    assert_mismatch(run, "cached value", where(cell), f"shows {value}")


@pytest.mark.engines  # slow (~8 s): two recalculations of edited copies by the formulas engine
def test_a_forged_cached_prediction_is_a_mismatch_when_a_copy_is_edited(tmp_path):
    """With --set the engines compute an edited copy: the book's own cached values are checked against the
    reference run on its own inputs."""
    forged, cell, value = forged_prediction(tmp_path, tiny(tmp_path))
    run = evaluate(forged, "--set", "HeadSwitches[0,1]=0")
    assert_mismatch(run, "cached value", where(cell))
    # the right book, edited the same way, matches
    right = book(tmp_path, "--weights", TINY, "--tokens", "1,2,3", name="right.xlsx")
    run = evaluate(right, "--set", "HeadSwitches[0,1]=0")
    assert run.returncode == 0, (run.stdout, run.stderr)


@pytest.mark.engines
def test_a_forged_cached_prediction_is_a_mismatch_with_every_engine(tmp_path):
    forged, cell, _ = forged_prediction(tmp_path, tiny(tmp_path))
    run = evaluate(forged, engine="all")
    assert run.returncode == 1
    assert run.stdout.count("— MISMATCH") == 4 and run.stdout.count("cached value: ") == 4, run.stdout


def test_stale_cached_logits_are_a_mismatch(tmp_path):
    """Every checked name's cached cells are compared, not only the prediction: a logit cached as 7."""
    path = tiny(tmp_path)
    cell = read_book(path).names[C.LOGITS].cell(4, 1)
    run = evaluate(forge_cached(path, tmp_path / "forged.xlsx", cell, 7))
    assert_mismatch(run, "cached value", where(cell), "shows 7")


# --- what is displayed: a difference is its own verdict -------------------------------------------------


def test_a_number_format_on_the_prediction_is_a_display_difference(tmp_path):
    """A format "5" on PredictedToken shows 5 whatever the book computes: the engines still MATCH (nothing
    computes differently), and eval's display verdict names the cell; exit 1."""
    path = tiny(tmp_path)
    info = read_book(path)
    cell = predicted_cell(path)
    xml = zipfile.ZipFile(path).read("xl/styles.xml").decode()
    xfs = int(re.search(r'<cellXfs count="(\d+)"', xml).group(1))

    def styles(text):
        text = re.sub(
            r'<numFmts count="(\d+)">',
            lambda m: f'<numFmts count="{int(m.group(1)) + 1}"><numFmt numFmtId="200" formatCode="5"/>',
            text,
        )
        return text.replace(
            "</cellXfs>",
            '<xf numFmtId="200" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>',
        ).replace(f'<cellXfs count="{xfs}"', f'<cellXfs count="{xfs + 1}"')

    def sheet(text):
        m = cell_xml(text, cell)
        return text[: m.start()] + re.sub(r' s="\d+"', f' s="{xfs}"', m.group(), count=1) + text[m.end() :]

    forged = rewrite(path, tmp_path / "forged.xlsx", {"xl/styles.xml": styles, part_of(info, cell.sheet): sheet})
    run = evaluate(forged)
    assert run.returncode == 1, (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    assert "— MATCH" in lines[0] and lines[-1].startswith("    display: DIFFERS"), run.stdout
    assert where(cell) in lines[-1] and 'number format "5"' in lines[-1], lines[-1]


def test_a_changed_number_format_code_is_a_display_difference(tmp_path):
    """The 0.000 format every logit shows, rewritten in styles.xml."""
    forged = rewrite(
        tiny(tmp_path),
        tmp_path / "forged.xlsx",
        {"xl/styles.xml": lambda x: x.replace('formatCode="0.000"', 'formatCode="0.0"')},
    )
    run = evaluate(forged)
    assert run.returncode == 1 and "— MATCH" in run.stdout, (run.stdout, run.stderr)
    assert "display: DIFFERS — xl/styles.xml" in run.stdout and 'formatCode="0.0"' in run.stdout, run.stdout


def test_removed_conditional_formats_are_a_display_difference(tmp_path):
    path = tiny(tmp_path)
    info = read_book(path)
    strip = lambda xml: re.sub(r"<conditionalFormatting .*?</conditionalFormatting>", "", xml)
    parts = {}
    for sheet in info.sheets:
        part = part_of(info, sheet)
        if "<conditionalFormatting" in zipfile.ZipFile(path).read(part).decode():
            parts[part] = strip
    assert parts
    run = evaluate(rewrite(path, tmp_path / "forged.xlsx", parts), "--json")
    assert run.returncode == 1, (run.stdout, run.stderr)
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert result["match"] and "conditional formats" in result["display_difference"], result


def test_a_conditional_format_of_a_foreign_formula_is_still_a_mismatch(tmp_path):
    """A conditional format's formula is computed by the spreadsheet: one xlgpt does not write (it may fetch a
    URL) is a mismatch, not a display difference."""
    path = tiny(tmp_path)
    info = read_book(path)
    rule = (
        '<conditionalFormatting sqref="A1"><cfRule type="expression" dxfId="0" priority="99">'
        '<formula>WEBSERVICE("http://example.com/")</formula></cfRule></conditionalFormatting>'
    )
    forged = rewrite(
        path,
        tmp_path / "forged.xlsx",
        {part_of(info, info.names[C.LOGITS].sheet): lambda x: x.replace("</sheetData>", "</sheetData>" + rule, 1)},
    )
    assert_mismatch(evaluate(forged), "conditional format")


# --- workbook settings that change results ----------------------------------------------------------------


@pytest.mark.parametrize(
    "attribute, words",
    [
        ('fullPrecision="0"', ["precision as displayed"]),
        ('iterate="1" iterateCount="100"', ["iterative calculation"]),
        ('calcMode="manual"', ["calculation mode is manual", "About block records auto"]),
    ],
)
def test_a_setting_that_changes_results_is_a_mismatch(tmp_path, attribute, words):
    forged = rewrite(
        tiny(tmp_path),
        tmp_path / "forged.xlsx",
        {"xl/workbook.xml": lambda x: x.replace("<calcPr ", f"<calcPr {attribute} ", 1)},
    )
    assert_mismatch(evaluate(forged), *words)


def test_a_manual_book_set_to_automatic_is_a_mismatch(tmp_path):
    """The About block records manual calculation (the Guide says so); calcPr without calcMode is automatic."""
    forged = rewrite(
        tiny(tmp_path, "--calc", "manual"),
        tmp_path / "forged.xlsx",
        {"xl/workbook.xml": lambda x: x.replace(' calcMode="manual"', "", 1)},
    )
    assert_mismatch(evaluate(forged), "calculation mode is auto", "About block records manual")


def test_another_calculation_setting_is_a_display_difference(tmp_path):
    """R1C1 references change how formulas read, not what they compute."""
    forged = rewrite(
        tiny(tmp_path),
        tmp_path / "forged.xlsx",
        {"xl/workbook.xml": lambda x: x.replace("<calcPr ", '<calcPr refMode="R1C1" ', 1)},
    )
    run = evaluate(forged)
    assert run.returncode == 1 and "— MATCH" in run.stdout and "refMode" in run.stdout, (run.stdout, run.stderr)


# --- tolerance relative to a table's scale ---------------------------------------------------------------


def test_a_table_of_tiny_numbers_is_compared_relative_to_its_scale(tmp_path):
    """A model whose embeddings are ~1e-7 has logits ~1e-7: a 30 % change to one token's embedding moves them by
    less than 1e-6, which the absolute tolerance alone let through."""
    from xlgpt.check import verify
    from xlgpt.model import reference
    from xlgpt.model.checkpoint import as_written, load

    ckpt = load(TINY)
    for name in ("wte.weight", "wpe.weight"):
        ckpt.tensors[name] = ckpt.tensors[name] * np.float32(1e-7)
    tokens = [1, 2, 3]
    want = verify.expected_values(ckpt, tokens)
    changed = as_written(ckpt)
    changed.tensors["wte.weight"][7] *= 1.3
    logits = reference.logits(changed, tokens)
    got = {C.LOGITS: logits.T, C.PREDICTIONS: want[C.PREDICTIONS]}
    assert 0 < np.abs(got[C.LOGITS] - want[C.LOGITS]).max() < verify.TOLERANCE  # inside the absolute tolerance
    assert not verify.compare("test", got, want, tokens)["match"]
    same = {C.LOGITS: want[C.LOGITS] * (1 + 1e-12), C.PREDICTIONS: want[C.PREDICTIONS]}
    assert verify.compare("test", same, want, tokens)["match"]  # rounding is no difference


@pytest.mark.engines
def test_a_book_of_tiny_weights_matches(tmp_path):
    """The relative tolerance leaves a right book of tiny numbers matching (LibreOffice computes in float64)."""
    from xlgpt.model.checkpoint import load, save

    ckpt = load(TINY)
    tensors = {k: v * np.float32(1e-7) if k in ("wte.weight", "wpe.weight") else v for k, v in ckpt.tensors.items()}
    save(tmp_path / "small", ckpt.config, tensors)
    xlgpt("build", "--weights", tmp_path / "small", "--tokens", "1,2,3", "--out", tmp_path / "b.xlsx", check=0)
    run = evaluate(tmp_path / "b.xlsx", engine="libreoffice")
    assert run.returncode == 0 and "— MATCH" in run.stdout, (run.stdout, run.stderr)


# --- config.json fields xlgpt does not compute -----------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("activation_function", "gelu"),
        ("activation_function", "relu"),
        ("scale_attn_weights", False),
        ("scale_attn_by_inverse_layer_idx", True),
        ("reorder_and_upcast_attn", True),
        ("model_type", "gpt_neo"),
    ],
)
def test_a_config_field_xlgpt_does_not_compute_is_refused(tmp_path, field, value):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config[field] = value
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "b.xlsx"
    assert_clean_error(xlgpt("build", "--weights", ckpt, "--tokens", "1", "--out", out), field, repr(value))
    assert not out.exists()


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh"])
def test_the_tanh_gelu_is_accepted_by_either_name(tmp_path, activation):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["activation_function"] = activation
    (ckpt / "config.json").write_text(json.dumps(config))
    xlgpt("build", "--weights", ckpt, "--tokens", "1", "--out", tmp_path / "b.xlsx", check=0)


def test_both_prefixed_and_plain_tensors_that_differ_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY, ckpt)
    tensors = load_file(ckpt / "model.safetensors")
    plain = next(k for k in tensors if k.endswith("wte.weight"))
    other = "transformer.wte.weight" if plain == "wte.weight" else "wte.weight"
    tensors[other] = tensors[plain] * 2
    save_file(tensors, str(ckpt / "model.safetensors"))
    out = tmp_path / "b.xlsx"
    assert_clean_error(xlgpt("build", "--weights", ckpt, "--tokens", "1", "--out", out), "wte.weight", "differ")
    # the same tensor twice is one tensor
    tensors[other] = tensors[plain]
    save_file(tensors, str(ckpt / "model.safetensors"))
    xlgpt("build", "--weights", ckpt, "--tokens", "1", "--out", out, check=0)


# --- the formulas engine samples ---------------------------------------------------------------------------


def test_the_formulas_engine_samples_at_a_temperature(tmp_path):
    """The book caches the sampler's weight column as #DIV/0! at Temperature 0; the formulas package took those
    cached errors for cells of their own and sampled inf."""
    run = evaluate(tiny(tmp_path), "--set", "Temperature=0.7", "--set", "Seed=9", "--json")
    assert run.returncode == 0, (run.stdout, run.stderr)
    [result] = [json.loads(line) for line in run.stdout.splitlines()]
    assert result["checks"][C.SAMPLED_TOKEN] == 0.0


@pytest.mark.engines  # slow (~11 s): the formulas engine recalculates the book at every step
def test_generate_with_the_formulas_engine_samples_at_a_temperature(tmp_path):
    run = xlgpt(
        "generate",
        "--weights",
        TINY,
        "--tokens",
        "1,2",
        "--steps",
        3,
        "--engine",
        "formulas",
        "--temperature",
        0.7,
        "--seed",
        9,
        "--json",
    )
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert json.loads(run.stdout)["match"] is True


# --- a damaged part ------------------------------------------------------------------------------------------


def test_corrupt_compressed_data_is_one_line(tmp_path):
    """Bytes of a sheet's deflate stream overwritten (the zip's directory intact): "damaged workbook", exit 2."""
    path = tiny(tmp_path)
    info = read_book(path)
    part = part_of(info, info.names[C.LOGITS].sheet)
    with zipfile.ZipFile(path) as zf:
        entry = zf.getinfo(part)
    data = bytearray(path.read_bytes())
    start = entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra)
    middle = start + entry.compress_size // 2
    data[middle : middle + 64] = bytes(range(64))
    damaged = tmp_path / "damaged.xlsx"
    damaged.write_bytes(bytes(data))
    assert_clean_error(evaluate(damaged), "damaged workbook")
