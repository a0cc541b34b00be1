"""xlgpt from Python: everything the command line does, as functions (the CLI only parses, calls and prints).

    import xlgpt
    built = xlgpt.build("book.xlsx", prompt="O Romeo, Romeo, wherefore art")
    [result] = xlgpt.evaluate("book.xlsx", engine="libreoffice")   # result["match"], result["token_id"], ...
    run = xlgpt.generate(prompt="Shall I", steps=5)                 # run["tokens"], run["text"], run["match"]
    trained = xlgpt.train(steps=3, out="trained")                   # trained["steps"][k]["loss"], ...

Bad input raises XlgptError (one line saying what is wrong); a verdict (MISMATCH) is a result, not an error.
"""

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlgpt.check.verify import check_provenance, checkpoint_for, evaluate_prompts, live_engine_for
from xlgpt.check.verify import evaluate as evaluate_book
from xlgpt.compile.backward import Training
from xlgpt.compile.build import build as build_book
from xlgpt.compile.build import check_tokens
from xlgpt.compile.inputs import Contrast
from xlgpt.compile.template import DEFAULT_TEMPLATE, GENERATE_TEMPLATE
from xlgpt.drive import steering
from xlgpt.drive.generate import PAD_ID, check_book, check_sampling, check_token_ids
from xlgpt.drive.generate import generate as generate_with_book
from xlgpt.drive.patching import sweep, write_heatmaps
from xlgpt.drive.train import BOOK
from xlgpt.drive.train import run as run_training
from xlgpt.drive.train import save as save_training
from xlgpt.engines import ENGINES
from xlgpt.engines.formulas import FORMULAS_MAX_CELLS
from xlgpt.engines.process import clean_up_all as clean_up_all  # cli: the interrupted exit
from xlgpt.engines.process import find_soffice
from xlgpt.engines.session import system_python
from xlgpt.engines.tokenizer import tokenize_with_sheets
from xlgpt.model import backward, reference
from xlgpt.model.checkpoint import Config, check_new_dir, load, random_tensors
from xlgpt.model.checkpoint import save as save_checkpoint
from xlgpt.model.hub import resolve
from xlgpt.model.sae import BUNDLED_SOURCE, load_sae
from xlgpt.package import XlgptError
from xlgpt.safefile import check_input_file, check_output, read_bounded
from xlgpt.sheet import contract as C
from xlgpt.sheet.cells import MAX_COLUMNS
from xlgpt.sheet.layout import FIRST_COL
from xlgpt.sheet.read import read_book
from xlgpt.tokenizer import hf as tk
from xlgpt.tokenizer.bpe import Capacity, capacity_for
from xlgpt.tokenizer.tables import display

DEFAULT_WEIGHTS = "shakespeare"  # the bundled model
DEFAULT_PROMPT = "O Romeo, Romeo, wherefore art"
DEFAULT_POSITIONS = 32  # a prompt-cell book's positions, at least: room to type a longer prompt
DEFAULT_CAPACITY = Capacity()  # the in-sheet tokenizer's: 256 characters, 512 bytes, 64 merge rounds
SAMPLE_TEXT = "sample.txt"  # text a bundled model ships for `xlgpt train`
Steering = steering.Steering
# An existing workbook is replaced only when it defines these names (its About block): one xlgpt wrote. Any
# other file is the user's (budget.xlsx): replaced only when they say so (force, --force).
BOOK_MARKS = (C.CHECKPOINT, C.BOOK_INPUT)
MAX_LEARNING_RATE = 10.0  # far above any that trains (sgd 0.1, adamw 1e-3); beyond it every step is NaN
SHEET_SLOTS = MAX_COLUMNS - FIRST_COL + 1  # a row of positions, characters or bytes starts at column C


def resolve_weights(name=None):
    """A checkpoint's directory: `name` is a directory, a model name (hub cache, imported, bundled), or None
    for the bundled default."""
    return resolve(DEFAULT_WEIGHTS if name is None else name, bundled_dir=tk.WEIGHTS_DIR)


def load_weights(name=None):
    """The checkpoint `name` names, carrying that name as given (what a built book records)."""
    return load(resolve_weights(name), given_name=str(DEFAULT_WEIGHTS if name is None else name))


def model_and_tokens(weights=None, tokens=None, prompt=None):
    """The checkpoint, its tokenizer (or None), the input token ids (`tokens`, or `prompt` tokenized; the
    bundled model's default prompt when neither is given) and the prompt text (None with `tokens`)."""
    if tokens is not None and prompt is not None:
        raise XlgptError("give either --tokens or --prompt, not both")
    ckpt = load_weights(weights)
    tok = tk.for_checkpoint(ckpt)
    if tokens is None:
        if tok is None:
            raise XlgptError(f"{ckpt.path}: no tokenizer files for this model; give token ids with --tokens")
        if prompt is None:
            prompt = DEFAULT_PROMPT if weights is None else None
            if prompt is None:
                raise XlgptError("give --prompt TEXT or --tokens IDS")
        ids = tok.encode(prompt)
        if len(ids) > ckpt.config.n_positions:
            raise XlgptError(
                f"the prompt is {len(ids)} tokens, more than the model's context of {ckpt.config.n_positions}"
            )
    else:
        ids = list(tokens)
    check_tokens(ids, ckpt.config)
    return ckpt, tok, ids, prompt


def repeated_random_tokens(weights=None, n=8, seed=0):
    """The induction lesson's prompt (TransformerLens' repeated tokens): n seeded random token ids, then the same
    n again, so that a head can find the earlier copy of each token of the second half."""
    cfg = load_weights(weights).config
    if 2 * n > cfg.n_positions:
        raise XlgptError(f"--repeat-random {n}: twice {n} tokens is more than the model's context of {cfg.n_positions}")
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, n).tolist()
    return ids + ids


def check_learning_rate(lr):
    """A learning rate is a number from 0 to MAX_LEARNING_RATE (NaN, infinity and 1e300 only make NaN steps)."""
    if lr is not None and not (math.isfinite(lr) and 0 <= lr <= MAX_LEARNING_RATE):
        raise XlgptError(f"--lr {lr:g}: a learning rate is a number from 0 to {MAX_LEARNING_RATE:g}")


def check_columns(counts):
    """Each (what, n): n columns of a sheet from column C, which ends at column XFD."""
    for what, n in counts:
        if n is not None and n > SHEET_SLOTS:
            raise XlgptError(
                f"{what} {n:,}: a sheet has {MAX_COLUMNS:,} columns, so a book holds at most {SHEET_SLOTS:,} from its "
                f"first column of values"
            )


def random_weights(out, layers=2, embd=64, heads=4, vocab=300, context=32, seed=0):
    """Write a seeded random GPT-2 checkpoint of any shape into the new directory `out`; returns its size."""
    out = Path(out)
    if out.name in ("", ".", "..") or out.absolute() == Path.cwd():
        raise XlgptError(f"--out {out}: give the name of a new directory to create")
    cfg = Config(layers, embd, heads, vocab, context)
    tensors = random_tensors(cfg, seed)
    save_checkpoint(out, cfg, tensors)
    return sum(t.size for t in tensors.values())


@dataclass
class Patching:
    """A patching book's second prompt (as many tokens as the clean one) and the two tokens (one token of text
    each) whose logit difference at the last position measures the behaviour the patches restore."""

    corrupted: str
    answer: str
    foil: str

    def contrast(self, tok, ids):
        """The book's Contrast: the corrupted prompt's ids and the two tokens' ids, checked."""
        if tok is None:
            raise XlgptError("--corrupted: this model has no tokenizer to read the corrupted prompt with")
        corrupted = tok.encode(self.corrupted)
        if len(corrupted) != len(ids):
            raise XlgptError(
                f"--corrupted: the corrupted prompt is {len(corrupted)} tokens, the clean one {len(ids)}; "
                f"patching needs as many"
            )
        single = {}
        for option, text in (("--answer", self.answer), ("--foil", self.foil)):
            if text is None:
                raise XlgptError(f"--corrupted needs {option} TEXT (one token)")
            token = tok.encode(text)
            if len(token) != 1:
                raise XlgptError(f"{option} {text!r} is {len(token)} tokens; it must be one (a leading space counts)")
            single[option] = token[0]
        return Contrast(corrupted, single["--answer"], single["--foil"])


@dataclass
class Built:
    """What build wrote."""

    path: Path
    tabs: int
    constants: int  # constant cells
    formulas: int  # formula cells
    seconds: float
    tokens: list  # the prompt's token ids (a training book's inputs)
    text: str = None  # the prompt as the tokenizer decodes the ids (None without a tokenizer)
    typed: bool = False  # the book tokenizes its Prompt cell itself
    positions: int = None
    capacity: Capacity = None
    manual: bool = False  # calculation is manual
    lens_at_last: bool = False  # the logit lens reads only the prompt's last token


@np.errstate(all="ignore")  # the user's numbers may overflow: the results say so, not warnings
def build(
    out="book.xlsx",
    weights=None,
    prompt=None,
    tokens=None,
    template=None,
    prompt_cell=True,
    positions=None,
    capacity=DEFAULT_CAPACITY,
    steer=None,
    sae=None,
    train=False,
    optimizer="sgd",
    lr=None,
    calculation=None,
    progress=None,
    force=False,
    patching=None,
    lens=None,
):
    """Compile a checkpoint and a prompt into a workbook of formulas at `out`.

    weights: a checkpoint directory or model name (default: the bundled Shakespeare model, with its default
    prompt). prompt/tokens: the input, as text or token ids. With a prompt and `prompt_cell`, the book
    tokenizes its Prompt cell itself (`positions`: the longest prompt it takes; `capacity`: the in-sheet
    tokenizer's Capacity, or None to fit the prompt). steer: a Steering (the Interventions tab's starting
    values); sae: an SAE folder or hub id for the Features tab. train: a training book (`optimizer` "sgd" or
    "adamw", learning rate `lr`). calculation: "auto" or "manual" (default: by the book's size). patching: a
    Patching (the book runs the corrupted prompt too, and patches; its input is then fixed token ids). lens: "every"
    position or the "last" only for the logit lens (default: by the lens's size). progress:
    progress(sheet, rows written). An existing `out` is replaced only if xlgpt wrote it, unless `force`.
    Returns a Built."""
    out = Path(out)
    check_output(
        out, [resolve_weights(weights), template, steer and steer.vector_file], marks=None if force else BOOK_MARKS
    )
    t0 = time.perf_counter()
    ckpt, tok, ids, text = model_and_tokens(weights, tokens, prompt)
    training = None
    if train:
        if (steer and steer.given()) or sae:
            raise XlgptError("--train: a training book has no interventions or SAE; leave out --steer-* and --sae")
        training, ids, text = training_for(ids, optimizer, lr), ids[:-1], None
    elif lr is not None:
        raise XlgptError("--lr is a training book's learning rate: it goes with --train")
    if patching and train:
        raise XlgptError("--corrupted: a training book does not patch; leave out --train")
    contrast = patching and patching.contrast(tok, ids)
    typed = prompt_cell and text is not None and not patching
    if not typed and (positions is not None or capacity != DEFAULT_CAPACITY):
        raise XlgptError(
            "--positions and --capacity size a Prompt cell's tokenizer: they go with --prompt (not with --tokens, "
            "--no-prompt-cell or --train)"
        )
    edits = steering.edits(ckpt, tok, steer or Steering(), sae)
    sae, sae_source = (None, None) if train else features_sae(ckpt, weights, sae)
    if typed:
        need = capacity_for([text], tok)
        if capacity is None:
            capacity, positions = need, positions or len(ids)
        else:  # never smaller than the prompt needs
            capacity = capacity.at_least(need)
        positions = positions or min(ckpt.config.n_positions, max(len(ids), DEFAULT_POSITIONS))
        check_columns(
            [
                ("--capacity: characters", capacity.chars),
                ("--capacity: bytes", capacity.bytes),
                ("--capacity: tokens", capacity.tokens),
                ("--positions", positions),
            ]
        )
    check_columns([("the book's positions", len(ids))])
    sheets, names = build_book(
        ckpt,
        ids,
        out,
        template,
        progress,
        tok,
        edits=edits,
        sae=sae,
        sae_source=sae_source,
        training=training,
        calculation=calculation,
        contrast=contrast,
        lens={None: None, "every": C.LENS_EVERY, "last": C.LENS_LAST}[lens],
        **(dict(prompt=text, positions=positions, capacity=capacity) if typed else {}),
    )
    counts = [s.cell_counts() for s in sheets]
    return Built(
        out,
        len(sheets),
        sum(c[0] for c in counts),
        sum(c[1] for c in counts),
        time.perf_counter() - t0,
        ids,
        tok.decode(ids) if tok else None,
        typed,
        positions if typed else None,
        capacity if typed else None,
        C.CALCULATION in names,
        C.LENS in names,
    )


def training_for(ids, optimizer, lr):
    """A training book's targets (the prompt's tokens after the first) and optimizer settings."""
    check_learning_rate(lr)
    if len(ids) < 2:
        raise XlgptError(
            "--train needs at least 2 tokens: the inputs are all but the last, the targets all but the first"
        )
    return Training(ids[1:], optimizer, lr if lr is not None else 0.1 if optimizer == "sgd" else 1e-3)


def features_sae(ckpt, weights, source):
    """The Features tab's SAE: `source`, or the bundled model's own; (SAE, source as the book records it)."""
    if source is None and (weights or DEFAULT_WEIGHTS) != DEFAULT_WEIGHTS:
        return None, None
    sae = load_sae(source)
    sae.check_model(ckpt.config)
    return sae, source or BUNDLED_SOURCE


def engines_for(engine):
    """The engines an --engine choice names: auto is the fastest that can compute the book ("fastest"); both is
    formulas and LibreOffice; all is every one."""
    if engine == "auto":
        return "fastest"
    if engine == "both":
        return ["formulas", "libreoffice"]
    if engine == "all":
        return list(ENGINES)
    if engine not in ENGINES:
        raise XlgptError(f"unknown engine {engine!r} (auto, both, all, {', '.join(ENGINES)})")
    return [engine]


def book_to_check(book, weights):
    """(the workbook's path, the checkpoint given for the reference or None: the one the book records)."""
    check_input_file(book, "workbook")
    return Path(book), resolve_weights(weights) if weights is not None else None


def live_engine(engine):
    """The engine generate and train drive: "auto" is LibreOffice where it is installed (it recomputes only what an
    edit touches), else IronCalc (pip only; it recomputes the whole book at every step)."""
    if engine != "auto":
        return engine
    try:
        find_soffice()
        system_python()
    except XlgptError:
        return "ironcalc"
    return "libreoffice"


@dataclass
class Patched:
    heatmaps: dict  # {component: [layer, position] PatchedMetric; "head": [layer, head]}
    columns: list  # each position's token text, "clean/corrupted" where they differ (ids without a tokenizer)
    engine: str
    seconds: float


def patch(book, out=None, engine="auto", weights=None, timeout=3600, on_stage=None, on_patch=None, force=False):
    """Activation patching in a patching book (built with a Patching): every patch in turn, computed by `engine`
    (auto: IronCalc where it can compute the book, else LibreOffice), each checked against the reference's; with
    `out`, a copy of the book with the heatmaps in its Patching tab (an existing `out` is replaced only if
    xlgpt wrote it, unless `force`). on_stage(message); on_patch(component, layer, position or head, value).
    Returns a Patched."""
    path, weights = book_to_check(book, weights)
    if out is not None:
        check_output(out, [path], marks=None if force else BOOK_MARKS)
    info = read_book(path)
    if info.patching is None:
        raise XlgptError(f"{path}: not a patching book (build one with --prompt, --corrupted, --answer and --foil)")
    ckpt = checkpoint_for(info, weights)
    tok = tk.for_checkpoint(ckpt)
    on_stage = on_stage or (lambda msg: None)
    check_provenance(info, ckpt, tok, on_stage=on_stage)  # drive only what xlgpt compiled
    text = (lambda t: display(tok.token_text(t))) if tok else str
    columns = [text(a) if a == b else f"{text(a)}/{text(b)}" for a, b in zip(info.tokens, info.patching["corrupted"])]
    engine = live_engine_for(info, engine)
    t0 = time.perf_counter()
    maps = sweep(info, ckpt, engine, timeout, on_stage, on_patch or (lambda *patch: None))
    if out is not None:
        on_stage(f"writing {out}")
        write_heatmaps(info, maps, out)
    return Patched(maps, columns, engine, time.perf_counter() - t0)


@np.errstate(all="ignore")
def evaluate(
    book,
    engine="auto",
    weights=None,
    prompt=None,
    sets=(),
    template=None,
    timeout=3600,
    max_cells=FORMULAS_MAX_CELLS,
    on_stage=None,
    on_skip=None,
):
    """Recalculate the workbook `book` with spreadsheet engines and check it against the NumPy reference.

    engine: "formulas", "libreoffice", "gnumeric", "ironcalc", "both", "all" (every engine installed that can
    compute the book; on_skip(engine, why) for the others) or "auto" (the fastest that can: IronCalc up to ~20M
    cells, LibreOffice beyond). prompt: type this into a
    copy's Prompt cell first; sets: "NAME[i,j]=VALUE" edits of input cells in a copy first. Returns one result
    dict per engine ("match", "token_id", "max_abs_logit_diff", ...). Raises check.provenance.NotCompiled when
    the book holds formulas xlgpt does not write for it (a MISMATCH before any engine runs)."""
    book, weights_dir = book_to_check(book, weights)
    results = evaluate_book(
        book,
        engines_for(engine),
        weights_dir,
        timeout=timeout,
        max_cells=max_cells,
        on_stage=on_stage or (lambda msg: None),
        prompt=prompt,
        template=template,
        sets=sets,
        on_skip=on_skip if engine == "all" else None,
    )
    for r in results:
        r.update(readout(r.pop("values", {}), r.pop("tokenizer", None), len(r["tokens"])))
    return results


TOP_CONTRIBUTIONS = 3  # the attribution's largest terms eval prints


def readout(values, tok, n):
    """What an edit to the book's inputs changes, as an engine computed it at the prompt's last position (`n`
    tokens): a training book's "loss", the "top_k" tokens, the "sampled_token", the "attribution"'s largest
    terms, the logit "lens"'s top token after each layer, a patching book's LogitDiff of each run and
    PatchedMetric ("patching"); only those the book has."""
    token = lambda i: {"token_id": int(i), **({"text": tok.token_text(int(i))} if tok else {})}
    usable = lambda name: name in values and np.isfinite(values[name]).all()  # a text (a message) reads as NaN
    out = {}
    if usable(C.LOSS):
        out["loss"] = float(values[C.LOSS][0, 0])
    if usable(C.TOP_K_TOKENS) and usable(C.TOP_K_PROBABILITIES):
        ids, probs = values[C.TOP_K_TOKENS][:, 0], values[C.TOP_K_PROBABILITIES][:, 0]
        out["top_k"] = [{**token(i), "probability": float(p)} for i, p in zip(ids, probs)]
    if C.SAMPLED_TOKEN in values:
        out["sampled_token"] = token(values[C.SAMPLED_TOKEN][0, 0]) if usable(C.SAMPLED_TOKEN) else None
    if usable(C.ATTRIBUTION_TABLE) and usable(C.ATTRIBUTION_OTHER) and usable(C.ATTRIBUTION_TOKEN):
        table, other = values[C.ATTRIBUTION_TABLE], values[C.ATTRIBUTION_OTHER][:, 0]
        heads = table.shape[1] - 2
        columns = [f"head {h}" for h in range(heads)] + ["attention bias", "MLP"]
        terms = [(f"layer {i} {c}", v) for i, row in enumerate(table) for c, v in zip(columns, row)]
        terms += list(zip(("embeddings", "steering", "ln_f bias"), other))
        terms.sort(key=lambda t: -abs(t[1]))
        out["attribution"] = {
            "target": token(values[C.ATTRIBUTION_TOKEN][0, 0]),
            "logit": float(values[C.ATTRIBUTION_LOGIT][0, 0]) if usable(C.ATTRIBUTION_LOGIT) else None,
            "largest": [{"component": c, "contribution": float(v)} for c, v in terms[:TOP_CONTRIBUTIONS]],
        }
    if usable(C.LENS_TOP_TOKENS) and usable(C.LENS_TOP_PROBABILITIES) and n:
        column = -1 if values[C.LENS_TOP_TOKENS].shape[1] == 1 else n - 1  # a lens of the last position only
        ids, probs = values[C.LENS_TOP_TOKENS][:, column], values[C.LENS_TOP_PROBABILITIES][:, column]
        streams = ["after the embeddings"] + [f"after layer {i}" for i in range(len(ids) - 1)]
        out["lens"] = [{"stream": s, **token(i), "probability": float(p)} for s, i, p in zip(streams, ids, probs)]
        out["lens_position"] = n - 1
    if usable(C.LOGIT_DIFF) and C.PATCHED_METRIC in values:
        clean, corrupted, patched = (float(v) for v in values[C.LOGIT_DIFF][0])
        metric = float(values[C.PATCHED_METRIC][0, 0])
        out["patching"] = {"clean": clean, "corrupted": corrupted, "patched": patched, "metric": metric}
    return out


@np.errstate(all="ignore")
def evaluate_each_prompt(book, prompts, weights=None, timeout=3600, on_stage=None, template=None, engine="auto"):
    """Type each prompt into the book's Prompt cell, the book loaded once ("auto": in IronCalc, or LibreOffice for a
    book of over ~20M cells), and check each: one result each."""
    book, weights_dir = book_to_check(book, weights)
    return evaluate_prompts(
        book,
        list(prompts),
        weights_dir,
        timeout=timeout,
        on_stage=on_stage or (lambda msg: None),
        template=template,
        engine=engine,
    )


def read_prompts(path):
    """A prompts file: one prompt a line, ended by a newline (\\n or \\r\\n; a form feed, U+2028 and the like are
    part of a prompt), blank lines skipped; UTF-8, with or without a byte order mark."""
    check_input_file(path, "prompts file")
    try:
        text = read_bounded(Path(path), what="prompts file").decode("utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise XlgptError(f"--prompts: cannot read {path} ({e})")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return [line for line in lines if line.strip()]


@np.errstate(all="ignore")
def predict(weights=None, tokens=None, prompt=None, top_k=5):
    """The next token by the NumPy reference alone: {"tokens", "token_id", "top": [{token_id, logit,
    probability, text?}]}."""
    ckpt, tok, ids, _ = model_and_tokens(weights, tokens, prompt)
    logits = reference.logits(ckpt, ids)[-1]
    probs = reference.softmax(logits)
    top = [int(i) for i in np.argsort(-logits, kind="stable")[:top_k]]
    rows = [
        {
            "token_id": i,
            "logit": float(logits[i]),
            "probability": float(probs[i]),
            **({"text": tok.token_text(i)} if tok else {}),
        }
        for i in top
    ]
    return {"tokens": ids, "token_id": top[0], "top": rows, **({"prompt": tok.decode(ids)} if tok else {})}


@np.errstate(all="ignore")
def continue_greedily(weights=None, tokens=None, prompt=None, steps=1):
    """The prompt continued by the reference's argmax, `steps` tokens (the window slides once the context is
    full): {"tokens", "generated", "text"?}."""
    ckpt, tok, ids, _ = model_and_tokens(weights, tokens, prompt)
    context, new = ckpt.config.n_positions, []
    for _ in range(steps):
        new.append(int(reference.logits(ckpt, (ids + new)[-context:])[-1].argmax()))
    return {
        "tokens": ids,
        "generated": new,
        **({"text": tok.decode(new), "full_text": tok.decode(ids + new)} if tok else {}),
    }


@np.errstate(all="ignore")
def generate(
    weights=None,
    tokens=None,
    prompt=None,
    book=None,
    steps=20,
    temperature=0.0,
    top_k=0,
    seed=1,
    engine="auto",
    positions=None,
    out=None,
    instruments=False,
    timeout=3600,
    on_built=None,
    on_start=None,
    on_token=None,
    force=False,
):
    """Generate text with the workbook itself: each step the spreadsheet computes the next token, which is
    checked against the reference and written into the next position.

    book: a token-ids workbook to generate with (else one is built for the prompt, kept at `out` if given, from
    the lean generation template unless `instruments`). on_built(path, positions, seconds), on_start(prompt
    ids, tokenizer) and on_token(id, text) report progress. Returns the run's result dict ("tokens", "match",
    "seconds_per_token", ...; "prompt" and "text" with a tokenizer). `out` is replaced only if xlgpt wrote
    it, unless `force`."""
    check_sampling(temperature, top_k, seed)  # before any slow work
    if book is not None and out is not None:
        raise XlgptError("--out keeps the workbook generate builds; with --book it builds none")
    # a book kept at --out shows its numbers on open; the temporary one caches no results, so it builds faster and
    # LibreOffice loads it without computing it: the first step computes what it reads
    cached, built = book is not None or out is not None, {}

    def report_built(path, positions, seconds):
        built["build_seconds"] = round(seconds, 2)
        if on_built:
            on_built(path, positions, seconds)

    with tempfile.TemporaryDirectory(prefix="xlgpt-gen-") as tmp:
        info, ids, tok, weights_dir = generation_book(
            weights,
            tokens,
            prompt,
            book,
            positions,
            Path(out) if out else Path(tmp) / "generate.xlsx",
            steps,
            instruments,
            report_built,
            force or out is None,  # the temporary book is ours
            cached,
        )
        check_book(info, ids, temperature, top_k, seed)  # before any output
        if on_start:
            on_start(ids, tok)
        result = generate_with_book(
            info,
            ids,
            steps,
            live_engine(engine),
            temperature,
            top_k,
            seed,
            weights_dir,
            timeout,
            on_token or (lambda token, text: None),
            tok=tok,
            cached=cached,
        )
    result.update(built)
    if tok:
        result.update(prompt=tok.decode(ids), text=tok.decode(result["tokens"]))
    return result


def generation_book(
    weights,
    tokens,
    prompt,
    book_path,
    positions,
    out,
    steps,
    instruments=False,
    on_built=None,
    force=False,
    cached=True,
):
    """generate's workbook: `book_path` as given, or a token-ids book built for the prompt (positions: the
    prompt's tokens and the steps', at most the context) with pad ids after it, at `out` (replaced only if
    xlgpt wrote it, unless `force`; its formula cells caching their results unless not `cached`). Returns
    (BookInfo, prompt ids, tokenizer, weights dir for the reference)."""
    if book_path is not None:
        for option, given in (("--positions", positions is not None), ("--instruments", instruments)):
            if given:
                raise XlgptError(f"{option} builds a workbook; it does not go with --book")
        check_input_file(book_path, "workbook")
        info = read_book(book_path)
        check_token_ids(info)
        weights_dir = resolve_weights(weights) if weights is not None else None
        ckpt = checkpoint_for(info, weights_dir)
        tok = tk.for_checkpoint(ckpt)
        if tokens is not None and prompt is not None:
            raise XlgptError("give either --tokens or --prompt, not both")
        if tokens is not None:
            ids = list(tokens)
        elif prompt is not None:
            if tok is None:
                raise XlgptError(f"{ckpt.path}: no tokenizer files for this model; give token ids with --tokens")
            ids = tok.encode(prompt)
        else:  # the book's ids, less the pad ids after them
            ids = list(info.tokens)
            while len(ids) > 1 and ids[-1] == PAD_ID:
                ids.pop()
        check_tokens(ids, ckpt.config)  # (generate then checks the book has room: check_book)
        return info, ids, tok, weights_dir
    ckpt, tok, ids, _ = model_and_tokens(weights, tokens, prompt)
    check_output(out, [ckpt.path], marks=None if force else BOOK_MARKS)
    # the positions the steps fill, no more: a token written at position t recomputes every later column
    positions = positions or min(ckpt.config.n_positions, len(ids) + steps)
    if not len(ids) <= positions <= ckpt.config.n_positions:
        raise XlgptError(
            f"--positions {positions}: needs between {len(ids)} (the prompt's tokens) and "
            f"{ckpt.config.n_positions} (the model's context)"
        )
    check_room(ids, positions, "the book would have" if positions < ckpt.config.n_positions else "the model has")
    check_columns([("--positions", positions)])
    t0 = time.perf_counter()
    build_book(
        ckpt,
        ids + [PAD_ID] * (positions - len(ids)),
        out,
        DEFAULT_TEMPLATE if instruments else GENERATE_TEMPLATE,
        tokenizer=tok,
        values=cached,
    )
    if on_built:
        on_built(out, positions, time.perf_counter() - t0)
    return read_book(out), ids, tok, ckpt.path


def check_room(ids, positions, has):
    """Refuse, before any slow work, a generation book whose prompt leaves no position to generate into."""
    if len(ids) >= positions:
        raise XlgptError(
            f"the workbook is full: the prompt's {len(ids)} tokens take all {positions} positions {has}; "
            f"nothing to generate (a shorter prompt, or a book with more positions)"
        )


@np.errstate(all="ignore")
def train(
    weights=None,
    text=None,
    prompt=None,
    steps=10,
    window=16,
    optimizer="adamw",
    lr=None,
    engine="auto",
    out="trained",
    timeout=3600,
    on_start=None,
    on_step=None,
):
    """Train the model with the spreadsheet: each step the workbook computes the loss, every gradient and the
    optimizer's update as formulas; the updated weights are copied over the weights (the copy-paste epoch) and
    the step is checked against the NumPy reference's own training loop.

    text: a UTF-8 file to train on, `window` tokens a step (default: the bundled model's sample text); prompt:
    train on this text instead, every step. Writes the trained checkpoint and train.xlsx into the new directory
    `out`. on_start(steps, window tokens, optimizer, lr, engine) and on_step(step dict) report progress. Returns
    {"steps": [{"step", "loss", "reference_loss", "seconds"}], "max_weight_diff", "checkpoint", "workbook", ...};
    raises drive.train.Diverged when a step leaves the reference."""
    out = Path(out)
    check_new_dir(out)
    check_learning_rate(lr)
    if text is not None and prompt is not None:
        raise XlgptError("give either --text or --prompt, not both")
    ckpt = load_weights(weights)
    tok = tk.for_checkpoint(ckpt)
    if tok is None:
        raise XlgptError(f"{ckpt.path}: no tokenizer files for this model, so it cannot read text")
    if prompt is not None:
        runs = [backward.prompt_window(tok.encode(prompt))] * steps
    else:
        if text is None:
            text = ckpt.path / SAMPLE_TEXT
            if not text.is_file():
                raise XlgptError("give --text FILE or --prompt TEXT (this model ships no sample text)")
        try:
            words = read_bounded(Path(text), what="text").decode("utf-8")
        except UnicodeDecodeError:
            raise XlgptError(f"{text}: not UTF-8 text")
        if window > ckpt.config.n_positions:
            raise XlgptError(f"--window {window} exceeds the model's context of {ckpt.config.n_positions}")
        runs = backward.windows(tok.encode(words), window, steps)
    lr = lr if lr is not None else 1e-3 if optimizer == "adamw" else 0.01
    engine = live_engine(engine)
    with tempfile.TemporaryDirectory(prefix="xlgpt-train-") as tmp:
        path = Path(tmp) / BOOK
        inputs, targets = runs[0]
        build_book(ckpt, inputs, path, tokenizer=tok, training=Training(targets, optimizer, lr))
        if on_start:
            on_start(len(runs), len(inputs), optimizer, lr, engine)
        done, final, moments, diff = run_training(
            read_book(path), ckpt, runs, engine, timeout, on_step or (lambda step: None)
        )
    save_training(out, ckpt, tok, runs, done, final, moments, optimizer, lr)
    return {
        "steps": done,
        "optimizer": optimizer,
        "lr": lr,
        "window": len(runs[0][0]),
        "engine": engine,
        "max_weight_diff": diff,
        "checkpoint": str(out),
        "workbook": str(out / BOOK),
        "match": True,
    }


def tokenize(texts, weights=None, tokenizer=None, engine=None):
    """Each text's token ids and strings; with `engine` ("formulas" or "libreoffice") the sheet tokenizes them
    too, compared with the tokenizers library ("match")."""
    if tokenizer:
        tok = tk.load(tokenizer)
    else:
        tok = tk.for_checkpoint(load(resolve_weights(weights)))
        if tok is None:
            raise XlgptError("this model has no tokenizer files; choose one with --tokenizer")
    sheets = tokenize_with_sheets(tok, texts, engine) if engine else None
    results = []
    for i, text in enumerate(texts):
        ids = tok.hf.encode(text).ids if engine else tok.encode(text)
        r = {"text": text, "tokens": ids}
        if engine:
            sheet = sheets[i]
            r.update(tokens=sheet.ids, reference=ids, match=sheet.ok and sheet.ids == ids)
            if not sheet.ok:
                r["status"] = sheet.status
        r["strings"] = [tok.token_text(t) if isinstance(t, int) else str(t) for t in r["tokens"]]
        results.append(r)
    return results


def features(sae=None, top=None, search=None, progress=False):
    """A sparse autoencoder's labelled features (default: the bundled one): {"path", "hook_name", "d_in",
    "d_sae", "model_name", "figures", "features": [{index, label, frequency, top_tokens}]}; `search` keeps those
    whose label or top tokens contain the word, `top` the K that fire most often."""
    loaded = load_sae(sae, progress=progress)
    info = loaded.features or {}
    rows = info.get("features") or [
        {"index": i, "label": "", "frequency": None, "top_tokens": []} for i in range(loaded.d_sae)
    ]
    if search:
        word = search.lower()
        rows = [
            r for r in rows if word in r["label"].lower() or any(word in t["token"].lower() for t in r["top_tokens"])
        ]
    if top:
        rows = sorted(rows, key=lambda r: -(r["frequency"] or 0))[:top]
    return {
        "path": str(loaded.path),
        "hook_name": loaded.hook_name,
        "d_in": loaded.d_in,
        "d_sae": loaded.d_sae,
        "model_name": loaded.model_name,
        "labelled": loaded.features is not None,  # the SAE's folder has a features.json
        "figures": info.get("figures"),
        "features": rows,
    }
