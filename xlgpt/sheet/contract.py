"""The book's interface: every defined name a workbook exposes and every metadata cell it carries.

The compiler writes them, and eval, the engines and the tokenizer read them, all through this module, so a
name is spelled once. People use the same names: type =PredictedToken or =INDEX(Logits,1,1) anywhere.
"""
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from xlgpt.package import XlgptError
from xlgpt.sheet.layout import Rect

# --- results: every model book ----------------------------------------------------------------------
TOKEN_IDS = "TokenIds"              # the input token id at each position (one row)
LOGITS = "Logits"                   # one row per vocabulary entry, one column per position
PREDICTIONS = "Predictions"         # the argmax of each position's logits (one row)
PREDICTED_TOKEN = "PredictedToken"  # the prediction at the prompt's last token (one cell)
LAST_POSITION = "LastPosition"      # the column (1-based) of the prompt's last token: every "at the last token"
                                    # result reads there; in a token-ids book an input (generation moves it)
VOCABULARY = "Vocabulary"           # each token's text, by id (one column), when the model has a tokenizer
# the template stages these names show: a template must have stages of these names
STAGE_OF = {TOKEN_IDS: "tokens", LOGITS: "logits", PREDICTIONS: "prediction"}

# --- prompt-cell books: the sheet tokenizes its Prompt cell itself -------------------------------------
PROMPT = "Prompt"                       # the text cell a person types into
TOKENIZER_STATUS = "TokenizerStatus"    # "ok", or why the text does not fit the sheet
SHEET_TOKEN_COUNT = "SheetTokenCount"   # how many tokens the sheet made
SHEET_TOKEN_IDS = "SheetTokenIds"       # the ids, "" after the last one (one row)
# beside the logits, so one engine export reads everything: the ids used, and 1/0 for prompt/padding
LOGITS_TOKEN_IDS, LOGITS_IN_PROMPT = "LogitsTokenIds", "LogitsInPrompt"
TOKENIZER_OUTPUTS = (TOKENIZER_STATUS, SHEET_TOKEN_COUNT, SHEET_TOKEN_IDS)
# the tokenizer's lookup tables
MERGE_TABLE, BYTE_TABLE, CLASS_TABLE = "MergeTable", "ByteTable", "ClassTable"

# --- what a learner reads: probabilities, top-k, the logit lens (Output and Logit lens tabs) ------------
PROBABILITIES = "Probabilities"     # softmax of each position's logits, same shape as Logits
TOP_K_TOKENS, TOP_K_PROBABILITIES = "TopKTokens", "TopKProbabilities"  # at the prompt's last token (column)
LENS_TOP_TOKENS = "LensTopTokens"   # rows: after the embeddings, after layer 0 .. L-1; columns: positions
LENS_TOP_PROBABILITIES = "LensTopProbabilities"

# --- a sparse autoencoder's features (Features tab) ----------------------------------------------------
FEATURE_ACTIVATIONS = "FeatureActivations"  # one row per feature, one column per position
TOP_FEATURES = "TopFeatures"                # the strongest features' indices: rows top 1..3, columns positions

# --- sampling (Prompt tab) ---------------------------------------------------------------------------
TEMPERATURE, TOP_K, SEED, SAMPLE_STEP = "Temperature", "TopK", "Seed", "SampleStep"  # inputs
SAMPLED_TOKEN = "SampledToken"      # the sampled id (or a message), at the prompt's last token

# --- interventions (Interventions tab) and direct logit attribution (Attribution tab) ------------------
HEAD_SWITCHES, MLP_SWITCHES = "HeadSwitches", "MlpSwitches"  # layers x heads; layers x 1; default 1
STEERING_LAYER, STEERING_COEFFICIENT, STEERING_VECTOR = "SteeringLayer", "SteeringCoefficient", "SteeringVector"
ATTRIBUTION_TOKEN = "AttributionToken"        # the target token (default: the predicted one)
ATTRIBUTION_DIRECTION = "AttributionDirection"  # (ln_f.weight * wte[target], centred) / sigma: a column
ATTRIBUTION_POSITION = "AttributionPosition"  # the column of the prompt's last token (1-based)
ATTRIBUTION_TABLE = "AttributionTable"        # rows: embeddings, steering, layer 0..; columns: heads, bias, MLP
ATTRIBUTION_OTHER = "AttributionOther"        # rows: embeddings, steering, ln_f.bias · wte[target]
ATTRIBUTION_LOGIT = "AttributionLogit"        # the target's logit, which the table plus the bias term adds up to

# --- training (a book built with --train: Loss tab, backward tabs, gradients and the optimizer's step) -----
TARGETS = "Targets"                 # the next token at each position, which the loss scores (one row)
LOSS = "Loss"                       # mean cross-entropy over the positions (one cell)
LOSS_HISTORY = "LossHistory"        # the loss of each step of xlgpt train (one column), in the book it writes
OPTIMIZER = "Optimizer"             # "sgd" or "adamw" (one cell, as built)
LEARNING_RATE, WEIGHT_DECAY = "LearningRate", "WeightDecay"
ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_STEP = "AdamBeta1", "AdamBeta2", "AdamEps", "AdamStep"  # step: t of this update
OPTIMIZER_CELLS = (LEARNING_RATE, WEIGHT_DECAY, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_STEP)
# each tensor's gradient, updated value and Adam moments (before and after the step) have the weight's layout,
# on tabs beside its weights tab, named after its weight name: Grad_L0_attn_c_attn_weight_T, New_..., AdamM_, ...
GRADIENT, UPDATED, ADAM_M, ADAM_V, NEW_ADAM_M, NEW_ADAM_V = "Grad_", "New_", "AdamM_", "AdamV_", "NewAdamM_", "NewAdamV_"

EDIT_CELLS = (HEAD_SWITCHES, MLP_SWITCHES, STEERING_LAYER, STEERING_COEFFICIENT, STEERING_VECTOR)
SAMPLING_CELLS = (TEMPERATURE, TOP_K, SEED, SAMPLE_STEP)
SAMPLING_DEFAULTS = {TEMPERATURE: 0, TOP_K: 0, SEED: 1, SAMPLE_STEP: 0}  # a new book's: the argmax

# --- metadata cells (the About block on the Tokens tab) ----------------------------------------------
CHECKPOINT = "Checkpoint"           # the checkpoint as --weights takes it
SAE_SOURCE = "SaeSource"            # the SAE as --sae takes it (empty: the bundled one), when the book has one
WEIGHTS_SHA256 = "WeightsSha256"    # sha256 of its model.safetensors
BOOK_INPUT = "BookInput"            # TOKEN_INPUT or PROMPT_INPUT
TOKEN_INPUT, PROMPT_INPUT = "token ids", "prompt cell"
CAPACITY = ("CapacityCharacters", "CapacityBytes", "CapacityRounds", "CapacityTokens")
CALCULATION = "Calculation"         # MANUAL when the book's calculation is manual (no cell: automatic)
AUTO, MANUAL = "auto", "manual"
# A book of more formula cells than this (an array formula counts each cell it fills) gets manual calculation
# unless told otherwise. The default book (~0.5M) recalculates in LibreOffice in a few seconds; a 124M book
# (tens of millions) would keep Excel busy for minutes on opening, before showing anything, and after every edit.
MANUAL_ABOVE = 1_000_000


def weight_name(tensor, transposed=False):
    """The defined name of a checkpoint tensor on its weights tab: h.0.attn.c_attn.weight -> L0_attn_c_attn_weight
    (with _T when the tab holds its transpose), wte.weight -> wte_weight."""
    name = re.sub(r"^h\.(\d+)\.", r"L\1_", tensor).replace(".", "_")
    return name + ("_T" if transposed else "")


def weight_name_in(names, tensor, prefix=""):
    """(prefix + the tensor's defined name, transposed?) as `names` (a book's defined names, or anything keyed by
    them) hold it, its weights tab storing it as it is or transposed; (None, False) when absent."""
    for transposed in (False, True):
        name = prefix + weight_name(tensor, transposed)
        if name in names:
            return name, transposed
    return None, False


def numbered(name, i):
    """The name of prompt i's result in a batch tokenizer book (Prompt_1, SheetTokenIds_1, ...)."""
    return f"{name}_{i}"


@dataclass(frozen=True)
class About:
    """What a book records about itself, besides its formulas."""
    checkpoint: str
    weights_sha256: str
    input: str = TOKEN_INPUT
    capacity: tuple = None  # (characters, UTF-8 bytes, merge rounds, tokens) of a prompt-cell book
    sae: str = None         # the SAE's source as --sae takes it ("bundled" for the bundled model's)
    calculation: str = None  # AUTO or MANUAL; None: chosen by the book's size when it is compiled

    def rows(self):
        """(label, value, defined name) rows, as the About block shows them."""
        rows = [("checkpoint", self.checkpoint, CHECKPOINT), ("weights sha256", self.weights_sha256, WEIGHTS_SHA256),
                ("input", self.input, BOOK_INPUT)]
        if self.sae:
            rows.append(("sparse autoencoder", self.sae, SAE_SOURCE))
        if self.calculation == MANUAL:  # only then: books of automatic calculation stay as they were
            rows.append(("calculation", MANUAL, CALCULATION))
        if self.capacity:
            labels = ("characters", "UTF-8 bytes", "merge rounds", "tokens")
            rows += [(f"tokenizer capacity: {label}", n, name)
                     for label, n, name in zip(labels, self.capacity, CAPACITY)]
        return rows


def write_about(tab, about, description=()):
    """The About block at the tab's next rows: `description` (label, value) rows, then the recorded
    metadata. Returns the defined names of the metadata cells."""
    tab.title("About this workbook")
    for label, value in description:
        tab.field(label, value)
    return {name: tab.field(label, value) for label, value, name in about.rows()}


def parse_ref(text):
    """A defined name's target ('Sheet name'!$A$1:$B$2) as a Rect, or None for anything else."""
    m = re.fullmatch(r"(?:'((?:[^']|'')+)'|([^!'\[\]]+))!\$?([A-Z]{1,3})\$?(\d+)(?::\$?([A-Z]{1,3})\$?(\d+))?", text)
    if not m:
        return None
    from openpyxl.utils import column_index_from_string as col
    sheet = (m.group(1) or "").replace("''", "'") or m.group(2)
    top, left = int(m.group(4)), col(m.group(3))
    bottom, right = (int(m.group(6)), col(m.group(5))) if m.group(5) else (top, left)
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
            raise XlgptError(f"{path}: part {info.filename} expands {info.compress_size:,} bytes to "
                             f"{info.file_size:,} (a zip bomb, not a workbook xlgpt wrote)")
        if not info.filename.startswith("xl/worksheets/") and info.file_size > MAX_MEMBER_BYTES:
            raise XlgptError(f"{path}: part {info.filename} expands to {info.file_size:,} bytes "
                             f"(limit {MAX_MEMBER_BYTES:,})")


# Rough size of one cell in sheet XML, to estimate a book's cell count before loading it.
BYTES_PER_CELL = 12


@dataclass
class BookInfo:
    """A workbook as the contract sees it: its tabs, defined names and recorded metadata."""
    path: Path
    sheets: list
    names: dict     # defined name -> Rect
    about: About
    prompt: object  # the Prompt cell's content (a prompt-cell book), else None
    tokens: list    # the token ids of a token-ids book, else None (the sheet tokenizes its prompt)
    est_cells: int
    edits: dict = None            # the interventions' cells (EDIT_CELLS) as rows of values, when the book has them
    attribution_token: object = None  # the AttributionToken cell: a token id, or the formula of the default
    sampling: dict = None         # the sampling inputs (SAMPLING_CELLS), when the book samples
    last_position: int = None     # a token-ids book's LastPosition
    training: dict = None         # a training book's: targets, optimizer, settings {name: value}, moments {name: grid}

    @property
    def used(self):
        """The token ids a token-ids book predicts from: up to LastPosition."""
        return self.tokens[:self.last_position] if self.tokens is not None else None

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
                        for attrs in _ARRAY_FORMULA.findall(window)[len(_ARRAY_FORMULA.findall(tail)):]:
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
            if ref.top < 1 or ref.left < 1 or ref.top + ref.height - 1 > MAX_ROWS or ref.left + ref.width - 1 > MAX_COLUMNS:
                raise XlgptError(f"the defined name {name} points outside a sheet's grid ({dn.attr_text})")
            names[name] = ref
    return names


def read_book(path):
    """Tabs, defined names, metadata and inputs of an xlgpt workbook, without loading the big sheets."""
    import openpyxl

    path = Path(path)
    if not path.is_file():
        raise XlgptError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip(zf, path)
            est = sum(i.file_size for i in zf.infolist() if i.filename.startswith("xl/worksheets/")) // BYTES_PER_CELL
        wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, SyntaxError, TypeError, AttributeError) as e:
        # SyntaxError: malformed XML (ElementTree's ParseError, lxml's XMLSyntaxError)
        raise XlgptError(f"{path}: not an .xlsx workbook, or a damaged one ({' '.join(str(e).split()) or type(e).__name__})")
    try:
        return _read_book(path, wb, est)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, SyntaxError, TypeError, AttributeError) as e:
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
                raise XlgptError(f"{path}: the defined name {name} points at a tab {ref.sheet!r} the book does not have")

        def cells(name):
            ref = names[name]
            if ref.height * ref.width > MAX_READ_CELLS:
                raise XlgptError(f"{path}: the defined name {name} spans {ref.height * ref.width:,} cells, far more "
                                 f"than xlgpt writes")
            return [c.value for r in wb[ref.sheet].iter_rows(min_row=ref.top, max_row=ref.bottom,
                                                            min_col=ref.left, max_col=ref.right) for c in r]

        value = lambda name: cells(name)[0] if name in names else None

        def grid(name):
            ref = names[name]
            if ref.height * ref.width > MAX_READ_CELLS:
                raise XlgptError(f"{path}: the defined name {name} spans {ref.height * ref.width:,} cells, far more "
                                 f"than xlgpt writes")
            rows = [[c.value for c in r] for r in wb[ref.sheet].iter_rows(min_row=ref.top, max_row=ref.bottom,
                                                                        min_col=ref.left, max_col=ref.right)]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in rows for v in row):
                raise XlgptError(f"{path}: the {name} cells must hold numbers")
            return rows

        def prompt_text():
            """The Prompt cell's text as the book computes it: a text cell, or the formula xlgpt writes for
            text a plain cell cannot carry (read by a parser of exactly that formula; nothing else is run)."""
            if PROMPT not in names:
                return None
            ref = names[PROMPT]
            cell = next(iter(next(wb[ref.sheet].iter_rows(min_row=ref.top, max_row=ref.top, min_col=ref.left,
                                                          max_col=ref.left), ())), None)
            if cell is None or cell.value is None:
                return ""
            if getattr(cell, "data_type", None) == "f":
                from xlgpt.tokenizer.tabs import prompt_from_formula

                text = prompt_from_formula(str(cell.value))
                if text is None:
                    raise XlgptError(f"{path}: the Prompt cell holds a formula xlgpt does not write; "
                                     f"type the text into it, or give it with --prompt")
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
            return {"targets": targets, "optimizer": optimizer, "settings": settings, "moments": moments,
                    "history": history}

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
        about = About(str(value(CHECKPOINT) or ""), str(value(WEIGHTS_SHA256) or ""), kind, capacity,
                      value(SAE_SOURCE), calculation)
        tokens = None
        if kind == TOKEN_INPUT:
            tokens = cells(TOKEN_IDS)
            if not all(isinstance(t, int) for t in tokens):
                raise XlgptError(f"{path}: the token cells must hold integer token ids")
        edits = {name: grid(name) for name in EDIT_CELLS} if HEAD_SWITCHES in names else None
        sampling = {name: value(name) for name in SAMPLING_CELLS} if SAMPLED_TOKEN in names else None
        info = BookInfo(path, wb.sheetnames, names, about, prompt_text(), tokens, est, edits,
                        value(ATTRIBUTION_TOKEN), sampling, training=training_inputs() if LOSS in names else None)
        if kind == TOKEN_INPUT:
            last = value(LAST_POSITION) if LAST_POSITION in names else len(tokens)
            if not isinstance(last, int) or not 1 <= last <= len(tokens):
                raise XlgptError(f"{path}: the {LAST_POSITION} cell must hold a whole number from 1 to {len(tokens)}")
            info.last_position = last
        return info
