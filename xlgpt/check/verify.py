"""Check a workbook: recalculate it with an engine and compare with the NumPy reference."""

import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np

from xlgpt.check.provenance import check_compiled, recompile
from xlgpt.engines import ENGINES
from xlgpt.engines.formulas import FORMULAS_MAX_CELLS, check_formulas_precision, check_formulas_size
from xlgpt.engines.libreoffice import read_ranges
from xlgpt.engines.session import LibreOfficeSession
from xlgpt.model import backward, reference
from xlgpt.model.checkpoint import as_written, fingerprint, load
from xlgpt.model.hub import resolve
from xlgpt.model.sae import sae_as_written
from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book
from xlgpt.sheet.styles import INPUT
from xlgpt.sheet.text import prompt_value
from xlgpt.sheet.writer import copy_with_cell, copy_with_cells
from xlgpt.tokenizer import hf as tokenizer
from xlgpt.tokenizer.bpe import needs

TOLERANCE = 1e-6


def checkpoint_for(book, weights=None):
    """Load the checkpoint the book was built from (or `weights`) and check it is the same one."""
    if weights:
        ckpt = load(weights)
    else:
        name = book.about.checkpoint
        if name is None or name == "":
            raise XlgptError(
                f"{book.path.name}: the workbook does not say which checkpoint it was built from; pass --weights"
            )
        try:  # what --weights was at build time: a model name, or a directory (relative to where it was built)
            path = resolve(str(name), bundled_dir=tokenizer.WEIGHTS_DIR)
        except XlgptError:
            raise XlgptError(
                f"{book.path.name} was built with --weights {name!r}, which is not found from here; "
                f"pass --weights (a directory, or a model name: xlgpt weights list)"
            )
        ckpt = load(path, given_name=str(name))
    recorded = book.about.weights_sha256
    if recorded and fingerprint(ckpt.path) != recorded:
        raise XlgptError(f"{ckpt.path}: these are not the weights the workbook was built from (sha256 differs)")
    return ckpt


def reference_edits(book, cfg):
    """The interventions the book's cells hold, for the reference (none in a book without them)."""
    edits = reference.Edits.none(cfg)
    values = book.edits
    if values:
        edits = reference.Edits(
            np.array(values[C.HEAD_SWITCHES], dtype=float).reshape(cfg.n_layer, cfg.n_head),
            np.array(values[C.MLP_SWITCHES], dtype=float).reshape(cfg.n_layer),
            int(values[C.STEERING_LAYER][0][0]),
            float(values[C.STEERING_COEFFICIENT][0][0]),
            np.array(values[C.STEERING_VECTOR], dtype=float).reshape(cfg.n_embd),
        )
    return edits


CHECKED = (
    C.LOGITS,
    C.PREDICTIONS,
    C.PROBABILITIES,
    C.TOP_K_TOKENS,
    C.TOP_K_PROBABILITIES,
    C.LENS_TOP_TOKENS,
    C.LENS_TOP_PROBABILITIES,
    C.FEATURE_ACTIVATIONS,
    C.ATTRIBUTION_TOKEN,
    C.ATTRIBUTION_TABLE,
    C.ATTRIBUTION_OTHER,
    C.ATTRIBUTION_LOGIT,
)
# names whose columns are positions: only the prompt's positions are compared (the rest is padding)
PER_POSITION = (
    C.LOGITS,
    C.PREDICTIONS,
    C.PROBABILITIES,
    C.LENS_TOP_TOKENS,
    C.LENS_TOP_PROBABILITIES,
    C.FEATURE_ACTIVATIONS,
)
# names holding token ids: equal, not close
EXACT = (C.PREDICTIONS, C.TOP_K_TOKENS, C.LENS_TOP_TOKENS, C.ATTRIBUTION_TOKEN, C.SAMPLED_TOKEN)


def expected_values(ckpt, tokens, edits=None, names=(), target=None, sampling=None, sae=None):
    """What each checked name should hold, from the reference: {name: 2-D array as the book lays it out}.
    `target`: the attribution's token (default: the predicted one); `sampling`: the book's sampling inputs.
    Only `names` the book has are computed, besides the logits and predictions."""
    logits, cache = reference.run(as_written(ckpt), tokens, edits)
    n, want = len(tokens), set(names)
    out = {C.LOGITS: logits.T, C.PREDICTIONS: logits.argmax(-1)[None]}
    probs = reference.softmax(logits)
    if C.PROBABILITIES in want:
        out[C.PROBABILITIES] = probs.T
    if C.TOP_K_TOKENS in want:
        ids, ps = reference.top_k(probs[-1], len(names[C.TOP_K_TOKENS].read(lambda r, c: 0)))
        out[C.TOP_K_TOKENS], out[C.TOP_K_PROBABILITIES] = ids[:, None], ps[:, None]
    if C.LENS_TOP_TOKENS in want:
        out[C.LENS_TOP_TOKENS], out[C.LENS_TOP_PROBABILITIES] = reference.logit_lens(as_written(ckpt), cache)
    if sampling is not None:
        try:
            out[C.SAMPLED_TOKEN] = np.array(
                [
                    [
                        reference.sample(
                            logits[-1],
                            sampling[C.TEMPERATURE],
                            sampling[C.TOP_K],
                            sampling[C.SEED],
                            sampling[C.SAMPLE_STEP],
                        )
                    ]
                ]
            )
        except (ValueError, TypeError):
            pass  # the book shows a message instead of a token
    if C.FEATURE_ACTIVATIONS in want and sae is not None:
        out[C.FEATURE_ACTIVATIONS] = reference.sae_features(reference.sae_params(sae), cache["entering"][sae.layer]).T
    if C.ATTRIBUTION_TABLE in want:
        target = int(logits[-1].argmax()) if target is None else target
        table, other, logit = reference.direct_logit_attribution(as_written(ckpt), cache, edits, target, n - 1)
        out.update(
            {
                C.ATTRIBUTION_TOKEN: np.array([[target]]),
                C.ATTRIBUTION_TABLE: table,
                C.ATTRIBUTION_OTHER: other[:, None],
                C.ATTRIBUTION_LOGIT: np.array([[logit]]),
            }
        )
    return out


def laid_out(prefix, tensors, names):
    """{defined name: 2-D array} of tensors as a training book's gradient/updated/moment tabs lay them out
    (transposed where the weights tab stores the transpose, vectors as columns)."""
    out = {}
    for tensor, value in tensors.items():
        name, transposed = C.weight_name_in(names, tensor, prefix)
        if name:
            out[name] = value.T if transposed else value.reshape(len(value), -1)
    return out


def from_layout(prefix, grids, tensors):
    """laid_out's inverse: {tensor: array of its own shape} from the grids of the names that hold them."""
    out = {}
    for tensor, value in tensors.items():
        name, transposed = C.weight_name_in(grids, tensor, prefix)
        if name:
            grid = np.array(grids[name], dtype=float)
            out[tensor] = (grid.T if transposed else grid).reshape(np.shape(value))
    return out


def training_values(ckpt, book):
    """What a training book's Loss, gradients, updated tensors (and Adam's new moments) hold, by the reference's
    backward pass (check/backward.py) and its optimizer, from the inputs, settings and moments in the book."""

    training, names = book.training, book.names
    settings = training["settings"]
    tensors = as_written(ckpt).tensors
    loss, grads, _ = backward.loss_and_grads(tensors, ckpt.config, book.used, training["targets"])
    out = {C.LOSS: np.array([[loss]]), **laid_out(C.GRADIENT, grads, names)}
    lr = settings[C.LEARNING_RATE]
    if training["optimizer"] == "sgd":
        new = backward.sgd(tensors, grads, lr)
    else:
        moments = [from_layout(prefix, training["moments"], tensors) for prefix in (C.ADAM_M, C.ADAM_V)]
        state = backward.AdamState(int(settings[C.ADAM_STEP]) - 1, *moments)
        new, state = backward.adamw(
            tensors,
            grads,
            state,
            lr,
            settings[C.ADAM_BETA1],
            settings[C.ADAM_BETA2],
            settings[C.ADAM_EPS],
            settings[C.WEIGHT_DECAY],
        )
        out.update(**laid_out(C.NEW_ADAM_M, state.m, names), **laid_out(C.NEW_ADAM_V, state.v, names))
    out.update(laid_out(C.UPDATED, new, names))
    return out


def compare(engine, values, expected, tokens, sheet_tokens=None):
    """One engine's result: every checked name against the reference, the prediction and, for a typed book,
    the ids its tokenizer computed (`sheet_tokens`; only the prompt's positions are compared)."""
    n = len(tokens)
    diffs, relative = {}, {}
    for name, want in expected.items():
        got = values[name][:, :n] if name in PER_POSITION else values[name]
        want = want[:, :n] if name in PER_POSITION else want
        ok_shape = got.shape == want.shape and np.isfinite(got).all()
        diff = float(np.abs(got - want).max()) if ok_shape and got.size else float("inf")
        diffs[name] = (
            0.0 if name in EXACT and ok_shape and np.array_equal(got, want) else float("inf") if name in EXACT else diff
        )
        scale = float(np.abs(want).max()) if want.size else 0.0
        relative[name] = diffs[name] / scale if scale else diffs[name]
    predictions = values[C.PREDICTIONS][0][:n]
    token_id = int(predictions[-1]) if n and np.isfinite(predictions[-1]) else None
    result = {
        "engine": engine,
        "tokens": tokens if sheet_tokens is None else sheet_tokens,
        "token_id": token_id,
        "reference_token_id": int(expected[C.PREDICTIONS][0][n - 1]),
        "max_abs_logit_diff": diffs[C.LOGITS],
        "checks": diffs,
        "relative": relative,  # each name's max abs difference over its largest reference value
        "match": bool(all(d <= TOLERANCE for d in diffs.values()) and (sheet_tokens is None or sheet_tokens == tokens)),
    }
    if sheet_tokens is not None:
        result["reference_tokens"] = tokens
    return result


# --- where a book goes wrong --------------------------------------------------------------------------
# On a mismatch, eval reads the output of every stage of the model (the ones reference.run records under their
# names in templates/gpt2.toml: tokens, embeddings, the residual stream x, the LayerNorms, qkv, the attention
# scores, mask and weights per head, the heads, the projections, the MLP, the logits) and names the first, in
# dataflow order, whose cells leave the reference. The instruments (logit lens, attribution, features,
# probabilities, top-k, sampling) are not searched: they read the model's stages and feed none, and their
# defined names are compared already. Nor is a training book's backward pass (eval skips the search there).


def stage_references(stages, cache, n):
    """[(stage, [(Rect, want, mask, head)])]: the stages of recompile's (Stage, output cells) pairs that the
    reference computes, with its values as the book lays them out (features down, positions across; one block per
    head with keys down, queries across) and the cells compared (the prompt's n positions; in an attention
    block a query's keys up to itself: the cells the scores fill)."""
    pending = {}
    for name, layer, value in cache["stages"]:
        pending.setdefault((name, layer), []).append(value)
    out = []
    for stage, cells in stages:
        values = pending.get((stage.name, stage.layer))
        if not values:
            continue
        value = values.pop(0)  # a name's outputs come in the same order in both (x, x, x, ... in a layer)
        if isinstance(cells, list):  # [head, query, key]
            if value.ndim != 3 or len(cells) != len(value):
                continue
            causal = np.triu(np.ones((n, n), bool))  # key <= query
            blocks = [(rect, v.T, causal, h) for h, (rect, v) in enumerate(zip(cells, value))]
        else:  # [position, feature]
            blocks = [(cells, value.T, np.ones(value.T.shape, bool), None)]
        if all(
            rect.height >= want.shape[0]
            and rect.width >= want.shape[1]
            and (isinstance(cells, list) or rect.height == want.shape[0])
            for rect, want, _, _ in blocks
        ):
            out.append((stage, blocks))
    return out


def first_difference(searched, got):
    """The first stage of `searched` (stage_references) whose cells, `got` (one array per Rect, in order),
    leave the reference by more than TOLERANCE, at its largest difference: a dict for eval's result, or None."""
    blocks = iter(got)
    for stage, expected in searched:
        worst = None
        for rect, want, mask, head in expected:
            values = np.asarray(next(blocks), dtype=float)[: want.shape[0], : want.shape[1]]
            with np.errstate(invalid="ignore"):
                diff = np.where(mask, np.abs(values - want), 0.0)
            diff[mask & ~np.isfinite(values)] = np.inf  # an error or an empty cell
            i, j = np.unravel_index(np.argmax(diff), diff.shape)
            if diff[i, j] > TOLERANCE and (worst is None or diff[i, j] > worst[0]):
                worst = (diff[i, j], head, rect.cell(i, j), j, values[i, j], want[i, j])
        if worst:
            diff, head, cell, position, value, want = worst
            finite = lambda x: float(x) if np.isfinite(x) else None
            return {
                "stage": stage.name,
                "layer": stage.layer,
                "head": head,
                "tab": stage.tab,
                "title": stage.title,
                "cell": cell.ref(absolute=False),
                "position": int(position),
                "got": finite(value),
                "want": float(want),
                "max_abs_diff": finite(diff),
            }
    return None


def describe_difference(d):
    """first_difference's dict as a line: "Layer 0 · qkv (Queries, keys and values: …) at 'Layer 0'!F40: ..."."""
    title = d["title"]
    if len(title) > 40:
        title = title.split(":")[0] + ": …" if ":" in title[:40] else title[:40].rstrip() + "…"
    head = f", head {d['head']}" if d.get("head") is not None else ""
    got = "an error or an empty cell" if d["got"] is None else f"{d['got']:.6g}"
    return f"{d['tab']} · {d['stage']}{head} ({title}) at {d['cell']}: {got} vs the reference's {d['want']:.6g}"


def sheet_tokens(values):
    """The token ids a typed book's tokenizer put in front of the padding."""
    ids, used = values[C.LOGITS_TOKEN_IDS][0], values[C.LOGITS_IN_PROMPT][0]
    return [int(i) for i, u in zip(ids, used) if u == 1 and np.isfinite(i)]


def check_prompt(book, text, tok):
    """Refuse, before any slow work, a prompt the typed book cannot take."""

    if not book.typed:
        raise XlgptError(
            f"{book.path.name}: --prompt needs a workbook built from a prompt (this one has fixed "
            f"token ids; build it with --prompt)"
        )
    if not text:
        raise XlgptError("the prompt is empty")
    tokenizer.check_text(text)
    for need, cap, what in zip(
        needs(tok, text), book.about.capacity, ("characters", "UTF-8 bytes", "merge rounds", "tokens (positions)")
    ):
        if need > cap:
            raise XlgptError(
                f"the prompt needs {need} {what}; this workbook holds {cap} "
                f"(rebuild it with a larger --capacity or --positions)"
            )


def with_prompt(book, text, directory):
    """A copy of a typed book with `text` in its Prompt cell."""

    ref = book.names[C.PROMPT]
    copy = Path(directory) / book.path.name
    copy_with_cell(book.path, copy, book.sheets.index(ref.sheet) + 1, ref.top, ref.left, prompt_value(text), INPUT)
    return dataclasses.replace(book, path=copy, prompt=text)


# the cells `eval --set NAME[i,j]=VALUE` may change: the book's inputs
SETTABLE = C.EDIT_CELLS + C.SAMPLING_CELLS + (C.ATTRIBUTION_TOKEN, C.LAST_POSITION, C.TOKEN_IDS)


def parse_set(text, book):
    """'HeadSwitches[1,2]=0' -> ((sheet index, row, col), 0.0): the cell of a settable name, 0-based index."""
    m = re.fullmatch(r"\s*(\w+)\s*(?:\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?\])?\s*=\s*(\S+)\s*", text)
    if not m:
        raise XlgptError(f"--set {text!r}: expected NAME=VALUE or NAME[i]=VALUE or NAME[i,j]=VALUE")
    name, i, j, value = m.groups()
    if name not in SETTABLE or name not in book.names:
        raise XlgptError(
            f"--set {text!r}: {name} is not a cell this workbook lets you set "
            f"(settable: {', '.join(n for n in SETTABLE if n in book.names)})"
        )
    rect = book.names[name]
    if i is None:
        i, j = (0, 0) if rect.height == rect.width == 1 else (None, None)
    elif j is None:  # one index: along the name's only long side
        i, j = (int(i), 0) if rect.width == 1 else (0, int(i))
    i, j = (int(i) if i is not None else None), (int(j) if j is not None else None)
    if i is None or not (0 <= i < rect.height and 0 <= j < rect.width):
        raise XlgptError(f"--set {text!r}: {name} is {rect.height} x {rect.width}; give an index inside it (from 0)")
    try:
        number = float(value)
    except ValueError:
        raise XlgptError(f"--set {text!r}: {value!r} is not a number")
    if not np.isfinite(number):
        raise XlgptError(f"--set {text!r}: {value!r} is not a finite number")
    cell = rect.cell(i, j)
    return (book.sheets.index(cell.sheet) + 1, cell.top, cell.left), int(number) if number.is_integer() else number


def with_edits(book, sets, directory):
    """A copy of the book with the --set cells changed, read again."""
    cells = dict(parse_set(text, book) for text in sets)
    copy = Path(directory) / ("edited-" + book.path.name)
    copy_with_cells(book.path, copy, cells, INPUT)
    return dataclasses.replace(read_book(copy), path=copy)


def check_provenance(book, ckpt, tok, template=None, on_stage=lambda msg: None):
    """Before any engine opens the book: its formulas must be the compiler's (check/provenance.py), so a book
    with forged results, external links or WEBSERVICE calls fails here (NotCompiled)."""

    on_stage("comparing the formulas with the compiler's")
    sheets, names, stages = recompile(book, ckpt, tok, template)
    check_compiled(book, sheets, names)
    return stages


def evaluate(
    path,
    engines,
    weights=None,
    timeout=3600,
    max_cells=FORMULAS_MAX_CELLS,
    on_stage=lambda msg: None,
    prompt=None,
    on_skip=None,
    template=None,
    sets=(),
):
    """One result dict per engine. `prompt`: type this text into a copy of a typed book first; `sets`:
    NAME[i,j]=VALUE edits of its input cells (interventions, sampling, ...) in that copy.
    With `on_skip`, a book too large for the formulas engine drops it (on_skip(reason)) instead of failing."""
    on_stage(f"reading {path}")
    book = read_book(path)
    ckpt = checkpoint_for(book, weights)
    tok = tokenizer.for_checkpoint(ckpt)
    if book.typed and tok is None:
        raise XlgptError(f"{ckpt.path}: no tokenizer files, so the workbook's prompt cannot be checked")
    if prompt is not None:
        check_prompt(book, prompt, tok)
    stages = check_provenance(book, ckpt, tok, template, on_stage)
    if "formulas" in engines:
        try:
            check_formulas_size(book, max_cells)  # refuse before any slow work
            check_formulas_precision(book)
        except XlgptError as e:
            if on_skip is None or len(engines) == 1:
                raise
            on_skip(str(e))
            engines = [e for e in engines if e != "formulas"]
    with tempfile.TemporaryDirectory(prefix="xlgpt-eval-") as tmp:
        if sets:
            on_stage("editing a copy")
            book = with_edits(book, sets, tmp)
        if prompt is not None:
            on_stage("typing the prompt into a copy")
            book = with_prompt(book, prompt, tmp)
        text = prompt if prompt is not None else book.prompt
        if book.typed and not text:
            raise XlgptError(
                f"{book.path.name}: the Prompt cell is empty; type a prompt into it, or give one with --prompt"
            )
        tokens = tok.encode(text) if book.typed else book.used
        on_stage("computing the NumPy reference")
        checked = {name: ref for name, ref in book.names.items() if name in CHECKED}
        target = book.attribution_token if isinstance(book.attribution_token, int) else None
        expected = expected_values(
            ckpt,
            tokens,
            reference_edits(book, ckpt.config),
            checked,
            target,
            book.sampling,
            book.about.sae and sae_as_written(book.about.sae, ckpt.config),
        )
        if book.training:
            expected.update(training_values(ckpt, book))
        wanted = list(expected) + ([C.LOGITS_TOKEN_IDS, C.LOGITS_IN_PROMPT] if book.typed else [])
        edits, searched = reference_edits(book, ckpt.config), []

        def search(values):
            """On a mismatch, the stages' cells to read (before the engine closes the book): see first_difference."""
            typed = sheet_tokens(values) if book.typed else None
            if book.training or compare("", values, expected, tokens, typed)["match"]:
                return []
            if not searched:  # once, for every engine that differs
                on_stage("looking for the first stage that leaves the reference")
                cache = reference.run(as_written(ckpt), tokens, edits)[1]
                searched.extend(stage_references(stages, cache, len(tokens)))
            return [rect for _, blocks in searched for rect, *_ in blocks]

        results = []
        for engine in engines:
            on_stage(f"recalculating with {engine}")
            options = {"max_cells": max_cells} if engine == "formulas" else {"timeout": timeout}
            values, stats = ENGINES[engine](book, wanted, more=search, **options)
            read = stats.pop("more", None)
            result = {
                **compare(engine, values, expected, tokens, sheet_tokens(values) if book.typed else None),
                **stats,
            }
            if not result["match"] and read is not None and searched:  # None: the engine could not read them
                result["first_difference"] = first_difference(searched, read)
            if tok:
                result["prompt"] = tok.decode(tokens)
                for key in ("token_id", "reference_token_id"):
                    if result[key] is not None:
                        result[key.replace("_id", "_text")] = tok.token_text(result[key])
            results.append(result)
    return results


def evaluate_prompts(path, prompts, weights=None, timeout=3600, on_stage=lambda msg: None, template=None):
    """Type each prompt into a typed book's Prompt cell in ONE LibreOffice session (one load), recalculate
    and compare with the reference: one result dict per prompt, like evaluate()'s."""
    import time

    on_stage(f"reading {path}")
    book = read_book(path)
    ckpt = checkpoint_for(book, weights)
    tok = tokenizer.for_checkpoint(ckpt)
    if tok is None:
        raise XlgptError(f"{ckpt.path}: no tokenizer files, so the workbook's prompt cannot be checked")
    if not prompts:
        raise XlgptError("no prompts given")
    for text in prompts:
        check_prompt(book, text, tok)  # refuse before any slow work
    stages = check_provenance(book, ckpt, tok, template, on_stage)
    wanted = [C.LOGITS, C.PREDICTIONS, C.LOGITS_TOKEN_IDS, C.LOGITS_IN_PROMPT]
    results = []
    on_stage("starting LibreOffice")
    with LibreOfficeSession(timeout=timeout) as lo:
        on_stage(f"loading {book.path.name}")
        sheet = lo.open(book.path)
        for text in prompts:
            on_stage(f"prompt {text!r}")
            t0 = time.perf_counter()
            sheet.set(C.PROMPT, text)
            sheet.calculate()
            values = sheet.read(wanted)
            seconds = time.perf_counter() - t0
            tokens = tok.encode(text)
            edits = reference_edits(book, ckpt.config)
            result = compare("libreoffice", values, expected_values(ckpt, tokens, edits), tokens, sheet_tokens(values))
            if not result["match"]:
                cache = reference.run(as_written(ckpt), tokens, edits)[1]
                searched = stage_references(stages, cache, len(tokens))
                rects = [rect for _, blocks in searched for rect, *_ in blocks]
                result["first_difference"] = first_difference(searched, read_ranges(sheet, rects))
            result.update(
                prompt=tok.decode(tokens),
                seconds=round(seconds, 2),
                load_seconds=round(sheet.load_seconds, 2),
                peak_rss_mb=lo.peak_rss_mb(),
            )
            for key in ("token_id", "reference_token_id"):
                if result[key] is not None:
                    result[key.replace("_id", "_text")] = tok.token_text(result[key])
            results.append(result)
    return results


def reference_for(book, weights=None):
    """(checkpoint, the reference's logits and predictions) for a token-ids book, as the book lays them out."""
    ckpt = checkpoint_for(book, weights)
    return ckpt, expected_values(ckpt, book.used, reference_edits(book, ckpt.config))
