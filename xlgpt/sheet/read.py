"""Reading a workbook as xlgpt wrote it: its defined names, the metadata it records and its inputs, without
loading the big sheets; zip parts read with bounds (a workbook is the user's file, and may be hostile)."""

import re
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import openpyxl
from openpyxl.utils import column_index_from_string

from xlgpt.package import XlgptError
from xlgpt.sheet.contract import (
    ADAM_M,
    ADAM_V,
    ANSWER_TOKEN,
    ATTRIBUTION_TOKEN,
    AUTO,
    BOOK_INPUT,
    CALCULATION,
    CAPACITY,
    CHECKPOINT,
    CORRUPTED_TOKEN_IDS,
    EDIT_CELLS,
    FOIL_TOKEN,
    HEAD_SWITCHES,
    LAST_POSITION,
    LENS,
    LENS_EVERY,
    LENS_LAST,
    LOGITS,
    LOSS,
    LOSS_HISTORY,
    MANUAL,
    OPTIMIZER,
    OPTIMIZER_CELLS,
    PATCH_CELLS,
    PATCHING_HEATMAPS,
    PREDICTIONS,
    PROMPT,
    PROMPT_INPUT,
    SAE_SOURCE,
    SAMPLED_TOKEN,
    SAMPLING_CELLS,
    TARGETS,
    TOKEN_IDS,
    TOKEN_INPUT,
    WEIGHTS_SHA256,
    About,
)
from xlgpt.sheet.layout import Rect
from xlgpt.sheet.text import prompt_from_formula


def parse_ref(text):
    """A defined name's target ('Sheet name'!$A$1:$B$2) as a Rect, or None for anything else."""
    m = re.fullmatch(r"(?:'((?:[^']|'')+)'|([^!'\[\]]+))!\$?([A-Z]{1,3})\$?(\d+)(?::\$?([A-Z]{1,3})\$?(\d+))?", text)
    if not m:
        return None
    sheet = (m.group(1) or "").replace("''", "'") or m.group(2)
    top, left = int(m.group(4)), column_index_from_string(m.group(3))
    bottom, right = (int(m.group(6)), column_index_from_string(m.group(5))) if m.group(5) else (top, left)
    return Rect(sheet, top, left, bottom - top + 1, right - left + 1)


# The largest zip member read whole (workbook.xml, relationships, a config): far above what xlgpt writes.
MAX_MEMBER_BYTES = 64 << 20


def read_member(zf, name, limit=MAX_MEMBER_BYTES):
    """A zip member's bytes, refusing one that declares or turns out to be larger than `limit` (a small zip
    can expand to gigabytes) or that is missing."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise XlgptError(f"{zf.filename}: no part {name} (not an .xlsx workbook, or a damaged one)")
    if info.file_size > limit:
        raise XlgptError(f"{zf.filename}: part {name} expands to {info.file_size:,} bytes (limit {limit:,})")
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise XlgptError(f"{zf.filename}: part {name} expands beyond {limit:,} bytes")
    return data


# A sheet part's XML compresses ~10:1; a zip bomb (2 MB expanding to 2 GB) compresses ~1000:1.
MAX_RATIO, RATIO_FROM = 100, 1 << 20
MAX_ROWS, MAX_COLUMNS = 1_048_576, 16_384
MAX_READ_CELLS = 1 << 20  # cells read into memory from one input name (token ids, switches, steering)


def check_zip(zf, path):
    """Refuse, before any part is read, a part declaring an impossible expansion, and any part other than a
    sheet larger than MAX_MEMBER_BYTES (read_member also bounds what is actually read)."""
    for info in zf.infolist():
        if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise XlgptError(
                f"{path}: part {info.filename} expands {info.compress_size:,} bytes to "
                f"{info.file_size:,} (a zip bomb, not a workbook xlgpt wrote)"
            )
        if not info.filename.startswith("xl/worksheets/") and info.file_size > MAX_MEMBER_BYTES:
            raise XlgptError(
                f"{path}: part {info.filename} expands to {info.file_size:,} bytes (limit {MAX_MEMBER_BYTES:,})"
            )


# Rough size of one cell in sheet XML, to estimate a book's cell count before loading it: a constant with its
# address, as most of a large book's cells are (the 124M generation book: 4.81 GB of sheet XML, 129.6M cells).
BYTES_PER_CELL = 37


@dataclass
class BookInfo:
    """A workbook as the contract sees it: its tabs, defined names and recorded metadata."""

    path: Path
    sheets: list
    names: dict  # defined name -> Rect
    about: About
    prompt: object  # the Prompt cell's content (a prompt-cell book), else None
    tokens: list  # the token ids of a token-ids book, else None (the sheet tokenizes its prompt)
    est_cells: int
    edits: dict = None  # the interventions' cells (EDIT_CELLS) as rows of values, when the book has them
    attribution_token: object = None  # the AttributionToken cell: a token id, or the formula of the default
    sampling: dict = None  # the sampling inputs (SAMPLING_CELLS), when the book samples
    last_position: int = None  # a token-ids book's LastPosition
    training: dict = None  # a training book's: targets, optimizer, settings {name: value}, moments {name: grid}
    patching: dict = None  # a patching book's: "corrupted" ids, and the AnswerToken, FoilToken and Patch cells by name

    def address(self, cell):
        """(sheet index from 1, row, column) of a one-cell Rect of this book, as the writer's copies take it."""
        return self.sheets.index(cell.sheet) + 1, cell.top, cell.left

    @property
    def used(self):
        """The token ids a token-ids book predicts from: up to LastPosition."""
        return self.tokens[: self.last_position] if self.tokens is not None else None

    @property
    def typed(self):
        return self.about.input == PROMPT_INPUT

    @cached_property
    def n_formulas(self):
        """The number of formulas in the sheets (an array formula counts once); reads every sheet."""
        return self.cell_counts.formulas

    @cached_property
    def cell_counts(self):
        """What the sheets hold, counted in their XML (reads every sheet, streamed: a sheet part can be
        gigabytes): see CellCounts."""
        # values (<v>, inline text) minus the cached results of formulas (written with an explicit t="n", "str" or "e")
        patterns = (re.compile(rb"<v>|<is>"), re.compile(rb"<f\b"), re.compile(rb' t="(?:n|str|e)"'))
        try:
            return self._count(patterns)
        except (zlib.error, EOFError, zipfile.BadZipFile) as e:
            raise XlgptError(f"{self.path}: a damaged workbook ({' '.join(str(e).split()) or type(e).__name__})")

    def _count(self, patterns):
        counts = [0, 0, 0, 0]
        with zipfile.ZipFile(self.path) as zf:
            for info in zf.infolist():
                if not info.filename.startswith("xl/worksheets/"):
                    continue
                with zf.open(info) as f:
                    tail = b""
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        # a match that spans the chunk boundary is counted once: in tail + chunk, not in tail
                        window = tail + chunk
                        for k, pattern in enumerate(patterns):
                            counts[k] += len(pattern.findall(window)) - len(pattern.findall(tail))
                        for attrs in _ARRAY_FORMULA.findall(window)[len(_ARRAY_FORMULA.findall(tail)) :]:
                            ref = _REF_ATTR.search(attrs)
                            area = ref and parse_ref("A!" + ref.group(1).decode())
                            counts[3] += area.height * area.width if area else 1
                        tail = window[-_TAIL:]
        values, formulas, cached, array_cells = counts
        return CellCounts(values - cached, formulas, array_cells)


@dataclass(frozen=True)
class CellCounts:
    """A book's size as a spreadsheet engine sees it: constant cells (numbers and texts), formulas (an array
    formula counts once) and the cells array formulas compute (each computes its whole range)."""

    constants: int
    formulas: int
    array_cells: int


_ARRAY_FORMULA = re.compile(rb'<f\b([^>]*\bt="array"[^>]*)>')
_REF_ATTR = re.compile(rb'\bref="([^"]+)"')
_TAIL = 256  # longer than any counted tag


def read_names(wb):
    """A loaded workbook's defined names that point at cells, as Rects."""
    names = {}
    for name, dn in wb.defined_names.items():
        ref = parse_ref(dn.attr_text or "")
        if ref:
            if (
                ref.top < 1
                or ref.left < 1
                or ref.top + ref.height - 1 > MAX_ROWS
                or ref.left + ref.width - 1 > MAX_COLUMNS
            ):
                raise XlgptError(f"the defined name {name} points outside a sheet's grid ({dn.attr_text})")
            names[name] = ref
    return names


# What reading a damaged or foreign file raises: one line, "a damaged workbook", exit 2
DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    KeyError,
    OSError,
    ValueError,
    SyntaxError,
    TypeError,
    AttributeError,
)


def read_book(path):
    """Tabs, defined names, metadata and inputs of an xlgpt workbook, without loading the big sheets."""
    path = Path(path)
    if not path.is_file():
        raise XlgptError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip(zf, path)
            est = sum(i.file_size for i in zf.infolist() if i.filename.startswith("xl/worksheets/")) // BYTES_PER_CELL
        wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except DAMAGED as e:
        # SyntaxError: malformed XML (ElementTree's ParseError, lxml's XMLSyntaxError); zlib.error and EOFError:
        # corrupt or cut-short compressed data in a part
        raise XlgptError(
            f"{path}: not an .xlsx workbook, or a damaged one ({' '.join(str(e).split()) or type(e).__name__})"
        )
    try:
        return _read_book(path, wb, est)
    except DAMAGED as e:
        raise XlgptError(f"{path}: a damaged workbook ({' '.join(str(e).split()) or type(e).__name__})")
    finally:
        wb.close()


def _read_book(path, wb, est):
    """read_book's reading of an open workbook (the sheets' parts are read lazily, so errors come from here)."""
    if True:
        try:
            names = read_names(wb)
        except XlgptError as e:
            raise XlgptError(f"{path}: {e}")
        for needed in (LOGITS, PREDICTIONS, TOKEN_IDS, CHECKPOINT, BOOK_INPUT):
            if needed not in names:
                raise XlgptError(f"{path}: not an xlgpt workbook (no defined name {needed})")
        for name, ref in names.items():
            if ref.sheet not in wb.sheetnames:
                raise XlgptError(
                    f"{path}: the defined name {name} points at a tab {ref.sheet!r} the book does not have"
                )

        def rows(name):
            """The cells of a defined name, row by row (bounded: a forged name may span a whole sheet)."""
            ref = names[name]
            if ref.height * ref.width > MAX_READ_CELLS:
                raise XlgptError(
                    f"{path}: the defined name {name} spans {ref.height * ref.width:,} cells, far more "
                    f"than xlgpt writes"
                )
            return [
                [c.value for c in r]
                for r in wb[ref.sheet].iter_rows(
                    min_row=ref.top, max_row=ref.bottom, min_col=ref.left, max_col=ref.right
                )
            ]

        cells = lambda name: [v for row in rows(name) for v in row]
        value = lambda name: cells(name)[0] if name in names else None

        def grid(name):
            held = rows(name)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in held for v in row):
                raise XlgptError(f"{path}: the {name} cells must hold numbers")
            return held

        def prompt_text():
            """The Prompt cell's text as the book computes it: a text cell, or the formula xlgpt writes for
            text a plain cell cannot carry (read by a parser of exactly that formula; nothing else is run)."""
            if PROMPT not in names:
                return None
            ref = names[PROMPT]
            cell = next(
                iter(
                    next(
                        wb[ref.sheet].iter_rows(min_row=ref.top, max_row=ref.top, min_col=ref.left, max_col=ref.left),
                        (),
                    )
                ),
                None,
            )
            if cell is None or cell.value is None:
                return ""
            if getattr(cell, "data_type", None) == "f":
                text = prompt_from_formula(str(cell.value))
                if text is None:
                    raise XlgptError(
                        f"{path}: the Prompt cell holds a formula xlgpt does not write; "
                        f"type the text into it, or give it with --prompt"
                    )
                return text
            return str(cell.value)

        def training_inputs():
            """A training book's inputs besides the tokens: targets, optimizer settings, Adam's moments."""
            targets, optimizer = cells(TARGETS), value(OPTIMIZER)
            if not all(isinstance(t, int) for t in targets):
                raise XlgptError(f"{path}: the {TARGETS} cells must hold integer token ids")
            if optimizer not in ("sgd", "adamw"):
                raise XlgptError(f"{path}: the {OPTIMIZER} cell must say 'sgd' or 'adamw'")
            settings = {name: grid(name)[0][0] for name in OPTIMIZER_CELLS if name in names}
            moments = {name: grid(name) for name in names if name.startswith((ADAM_M, ADAM_V))}
            history = [row[0] for row in grid(LOSS_HISTORY)] if LOSS_HISTORY in names else []
            return {
                "targets": targets,
                "optimizer": optimizer,
                "settings": settings,
                "moments": moments,
                "history": history,
            }

        def patching_inputs():
            """A patching book's inputs: the corrupted ids, the answer and foil tokens, what to patch."""
            held = {name: value(name) for name in (ANSWER_TOKEN, FOIL_TOKEN, *PATCH_CELLS)}
            corrupted = cells(CORRUPTED_TOKEN_IDS)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in corrupted + list(held.values())):
                raise XlgptError(
                    f"{path}: the {CORRUPTED_TOKEN_IDS}, {ANSWER_TOKEN}, {FOIL_TOKEN} and Patch cells must hold "
                    f"whole numbers"
                )
            grids = {component: rows(name) for component, name in PATCHING_HEATMAPS.items()}
            filled = {v not in (None, "") for grid in grids.values() for row in grid for v in row}
            if filled == {True} and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for g in grids.values() for r in g for v in r
            ):
                heatmaps = grids
            elif filled == {False}:
                heatmaps = None
            else:
                raise XlgptError(f"{path}: the Patching tab's heatmaps must be empty or all numbers (xlgpt patch's)")
            return {"corrupted": corrupted, **held, "heatmaps": heatmaps}

        kind = value(BOOK_INPUT)
        if kind not in (TOKEN_INPUT, PROMPT_INPUT):
            raise XlgptError(f"{path}: the {BOOK_INPUT} cell must say {TOKEN_INPUT!r} or {PROMPT_INPUT!r}")
        capacity = None
        if kind == PROMPT_INPUT:
            capacity = tuple(value(n) for n in CAPACITY)
            if not all(isinstance(n, int) and n > 0 for n in capacity):
                raise XlgptError(f"{path}: the tokenizer capacity cells must hold positive whole numbers")
        calculation = value(CALCULATION) or AUTO
        if calculation not in (AUTO, MANUAL):
            raise XlgptError(f"{path}: the {CALCULATION} cell must say {MANUAL!r} or be absent")
        lens = value(LENS) or LENS_EVERY
        if lens not in (LENS_EVERY, LENS_LAST):
            raise XlgptError(f"{path}: the {LENS} cell must say {LENS_LAST!r} or be absent")
        about = About(
            str(value(CHECKPOINT) or ""),
            str(value(WEIGHTS_SHA256) or ""),
            kind,
            capacity,
            value(SAE_SOURCE),
            calculation,
            lens,
        )
        tokens = None
        if kind == TOKEN_INPUT:
            tokens = cells(TOKEN_IDS)
            if not all(isinstance(t, int) for t in tokens):
                raise XlgptError(f"{path}: the token cells must hold integer token ids")
        edits = {name: grid(name) for name in EDIT_CELLS} if HEAD_SWITCHES in names else None
        sampling = {name: value(name) for name in SAMPLING_CELLS} if SAMPLED_TOKEN in names else None
        info = BookInfo(
            path,
            wb.sheetnames,
            names,
            about,
            prompt_text(),
            tokens,
            est,
            edits,
            value(ATTRIBUTION_TOKEN),
            sampling,
            training=training_inputs() if LOSS in names else None,
            patching=patching_inputs() if CORRUPTED_TOKEN_IDS in names else None,
        )
        if kind == TOKEN_INPUT:
            last = value(LAST_POSITION) if LAST_POSITION in names else len(tokens)
            if not isinstance(last, int) or not 1 <= last <= len(tokens):
                raise XlgptError(f"{path}: the {LAST_POSITION} cell must hold a whole number from 1 to {len(tokens)}")
            info.last_position = last
        return info
