"""Check a workbook: recalculate it with an engine and compare with the NumPy reference."""

import contextlib
import dataclasses
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from xlgpt.check.provenance import CachedError, check_compiled, from_layout, recompile
from xlgpt.engines import ENGINES
from xlgpt.engines.formulas import FORMULAS_MAX_CELLS
from xlgpt.engines.ironcalc import IronCalcSheet, ironcalc_fastest
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

TOLERANCE = 1e-6  # the largest difference from the reference a table may have, absolute...
RELATIVE = 1e-6  # ...and relative to the table's largest |value| (a model of weights ~1e-7 has logits ~1e-7)
ZERO_TABLE = 1e-12  # a table whose reference is all zeros: rounding only


def tolerance(want):
    """The largest difference allowed in a table whose reference values are `want`: 1e-6, or 1e-6 of the
    table's largest magnitude when that is below 1, so that a table of tiny numbers cannot hide a change
    of 30 % inside the absolute tolerance."""
    want = np.asarray(want, dtype=float)
    finite = np.abs(want[np.isfinite(want)])
    scale = float(finite.max()) if finite.size else 0.0
    return min(TOLERANCE, RELATIVE * scale) if scale > 0 else ZERO_TABLE


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
    *C.HEAD_SCORES,
    C.LOGIT_DIFF,
    C.PATCHED_METRIC,
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
EXACT = (C.PREDICTIONS, C.PREDICTED_TOKEN, C.TOP_K_TOKENS, C.LENS_TOP_TOKENS, C.ATTRIBUTION_TOKEN, C.SAMPLED_TOKEN)


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
        ids, ps = reference.logit_lens(as_written(ckpt), cache)
        if names[C.LENS_TOP_TOKENS].width == 1:  # the lens reads the last position only (About: LENS_LAST)
            ids, ps = ids[:, -1:], ps[:, -1:]
        out[C.LENS_TOP_TOKENS], out[C.LENS_TOP_PROBABILITIES] = ids, ps
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
    if C.PREVIOUS_TOKEN_SCORES in want:
        scores = reference.head_scores(cache, tokens)
        out.update(
            {
                C.PREVIOUS_TOKEN_SCORES: scores["previous"],
                C.INDUCTION_SCORES: scores["induction"],
                C.DUPLICATE_TOKEN_SCORES: scores["duplicate"],
            }
        )
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
    diffs, relative, limits = {}, {}, {}
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
        limits[name] = 0.0 if name in EXACT else tolerance(want)
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
        "match": bool(
            all(d <= limits[name] for name, d in diffs.items()) and (sheet_tokens is None or sheet_tokens == tokens)
        ),
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
    leave the reference by more than the tolerance (tolerance(): 1e-6, relative for a block of small numbers), at
    its largest difference: a dict for eval's result, or None."""
    blocks = iter(got)
    for stage, expected in searched:
        worst = None
        for rect, want, mask, head in expected:
            values = np.asarray(next(blocks), dtype=float)[: want.shape[0], : want.shape[1]]
            with np.errstate(invalid="ignore"):
                diff = np.where(mask, np.abs(values - want), 0.0)
            diff[mask & ~np.isfinite(values)] = np.inf  # an error or an empty cell
            i, j = np.unravel_index(np.argmax(diff), diff.shape)
            if diff[i, j] > tolerance(want[mask]) and (worst is None or diff[i, j] > worst[0]):
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
    copy_with_cell(book.path, copy, *book.address(ref), prompt_value(text), INPUT)
    return dataclasses.replace(book, path=copy, prompt=text)


# the cells `eval --set NAME[i,j]=VALUE` may change: the book's inputs (TokenIds and LastPosition in a token-ids
# book only: a Prompt-cell book computes them from its Prompt)
SETTABLE = (
    C.EDIT_CELLS
    + C.SAMPLING_CELLS
    + C.PATCH_CELLS
    + (C.ATTRIBUTION_TOKEN, C.LAST_POSITION, C.TOKEN_IDS, C.CORRUPTED_TOKEN_IDS, C.ANSWER_TOKEN, C.FOIL_TOKEN)
)


def settable(book):
    """The names `eval --set` may change in this book: its input cells."""
    computed = (C.TOKEN_IDS, C.LAST_POSITION) if book.typed else ()
    return [n for n in SETTABLE if n in book.names and n not in computed]


def value_range(name, book, config=None):
    """(smallest, largest, whole numbers only?) a settable name's cells take, as the book and the reference
    read them; None: any finite number. `config`: the checkpoint's (else what the book's shape tells)."""
    if name in (C.STEERING_LAYER, C.PATCH_LAYER):
        return 0, (config.n_layer if config else book.names[C.HEAD_SWITCHES].height) - 1, True
    if name in (C.ATTRIBUTION_TOKEN, C.TOKEN_IDS, C.CORRUPTED_TOKEN_IDS, C.ANSWER_TOKEN, C.FOIL_TOKEN):
        return 0, (config.vocab_size if config else book.names[C.LOGITS].height) - 1, True
    if name == C.PATCH_HEAD:
        return 0, (config.n_head if config else book.names[C.HEAD_SWITCHES].width) - 1, True
    if name == C.SAMPLE_STEP:  # the sheet's random numbers reach one step per position (ops/sampling.py)
        return 0, config.n_positions if config else None, True
    return {
        C.TEMPERATURE: (0, None, False),
        C.TOP_K: (0, None, True),
        C.SEED: (1, reference.MINSTD_MODULUS - 1, True),
        C.LAST_POSITION: (1, len(book.tokens or ()), True),
        C.PATCH_COMPONENT: (0, len(C.PATCH_COMPONENTS) - 1, True),
        C.PATCH_POSITION: (0, len(book.tokens or ()) - 1, True),
    }.get(name)


def parse_set(text, book, config=None):
    """'HeadSwitches[1,2]=0' -> ((sheet index, row, col), 0.0): the cell of a settable name, 0-based index, and
    a value in the name's range (value_range)."""
    m = re.fullmatch(r"\s*(\w+)\s*(?:\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?\])?\s*=\s*(\S+)\s*", text)
    if not m:
        raise XlgptError(f"--set {text!r}: expected NAME=VALUE or NAME[i]=VALUE or NAME[i,j]=VALUE")
    name, i, j, value = m.groups()
    if name not in settable(book):
        raise XlgptError(
            f"--set {text!r}: {name} is not a cell this workbook lets you set (settable: {', '.join(settable(book))})"
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
    bounds = value_range(name, book, config)
    if bounds:
        low, high, whole = bounds
        if (whole and not number.is_integer()) or number < low or (high is not None and number > high):
            kind = "a whole number" if whole else "a number"
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise XlgptError(f"--set {text!r}: {name} must be {kind} {span}")
    cell = rect.cell(i, j)
    return book.address(cell), int(number) if number.is_integer() else number


def with_edits(book, sets, directory, config=None):
    """A copy of the book with the --set cells changed (values checked against `config`, the checkpoint's),
    read again."""
    cells = dict(parse_set(text, book, config) for text in sets)
    copy = Path(directory) / ("edited-" + book.path.name)
    copy_with_cells(book.path, copy, cells, INPUT)
    return dataclasses.replace(read_book(copy), path=copy)


def check_provenance(book, ckpt, tok, template=None, on_stage=lambda msg: None):
    """Before any engine opens the book: everything in it must be the compiler's (check/provenance.py): its
    formulas, its constants (weights, tokenizer tables, labels) and settings, so a book with forged results or
    weights, external links or WEBSERVICE calls fails here (NotCompiled). Returns (stages, Provenance: the
    book's first display difference, and the cached values of the names eval reads)."""

    on_stage("comparing the book with the compiler's (formulas, constants, formats, settings)")
    sheets, names, stages = recompile(book, ckpt, tok, template)
    return stages, check_compiled(book, sheets, names, cached_names(book))


def cached_names(book):
    """The names whose cached values eval compares: the results it reads."""
    read = CHECKED + (C.PREDICTED_TOKEN, C.SAMPLED_TOKEN, C.LOGITS_TOKEN_IDS, C.LOGITS_IN_PROMPT, C.LOSS)
    computed = (C.GRADIENT, C.UPDATED, C.NEW_ADAM_M, C.NEW_ADAM_V)
    return [name for name in book.names if name in read or name.startswith(computed)]


def book_expected(book, ckpt, tokens):
    """What the book's checked names should hold for `tokens` and the inputs its cells hold, by the reference."""
    checked = {name: ref for name, ref in book.names.items() if name in CHECKED}
    target = book.attribution_token if isinstance(book.attribution_token, int) else None
    edits = reference_edits(book, ckpt.config)
    expected = expected_values(
        ckpt,
        tokens,
        edits,
        checked,
        target,
        book.sampling,
        book.about.sae and sae_as_written(book.about.sae, ckpt.config),
    )
    if C.PREDICTED_TOKEN in book.names:  # the prediction at the last token, in the cell that shows it
        expected[C.PREDICTED_TOKEN] = expected[C.PREDICTIONS][:, len(tokens) - 1 :]
    if book.training:
        expected.update(training_values(ckpt, book))
    if book.patching:
        expected.update(patching_values(ckpt, book, tokens, edits))
    return expected


def patch_held(book, cfg, n):
    """Where the book's Patch cells say to patch, for the reference: (component, layer, position, head), or None
    where they name no place of the model (the sheet then patches nothing)."""
    cells = book.patching
    code, layer, position, head = (cells[name] for name in C.PATCH_CELLS)
    if not 1 <= code < len(C.PATCH_COMPONENTS) or not 0 <= layer < cfg.n_layer:
        return None
    component = C.PATCH_COMPONENTS[code]
    if (component == "head" and not 0 <= head < cfg.n_head) or (component != "head" and not 0 <= position < n):
        return None
    return component, layer, position, head


def patching_values(ckpt, book, tokens, edits):
    """LogitDiff of the clean, corrupted and patched runs and PatchedMetric, by the reference, for the tokens up
    to LastPosition and the Patch cells the book holds."""
    cells, ckpt = book.patching, as_written(ckpt)
    corrupted = cells["corrupted"][: len(tokens)]
    clean_logits, cache, corrupted_logits = reference.patching_runs(ckpt, tokens, corrupted, edits)
    where = patch_held(book, ckpt.config, len(tokens))
    patched = corrupted_logits if where is None else reference.patched_logits(ckpt, corrupted, cache, where, edits)
    diffs = [
        reference.logit_diff(lg, cells[C.ANSWER_TOKEN], cells[C.FOIL_TOKEN])
        for lg in (clean_logits, corrupted_logits, patched)
    ]
    out = {
        C.LOGIT_DIFF: np.array([diffs]),
        C.PATCHED_METRIC: np.array([[reference.patched_metric(diffs[2], diffs[0], diffs[1])]]),
    }
    tokens_and_answers = (tokens, corrupted, cells[C.ANSWER_TOKEN], cells[C.FOIL_TOKEN])
    attribution = backward.attribution_patching(ckpt.tensors, ckpt.config, *tokens_and_answers, edits)
    out.update(laid_out_like_heatmaps(attribution, C.ATTRIBUTION_PATCHING, len(cells["corrupted"])))
    if cells["heatmaps"] is not None:
        exact = heatmaps_expected(ckpt, book, tokens, edits)
        out.update(exact)
        out[C.ATTRIBUTION_CORRELATION] = np.array(
            [
                [np.corrcoef(exact[name].ravel(), out[C.ATTRIBUTION_PATCHING[c]].ravel())[0, 1]]
                for c, name in C.PATCHING_HEATMAPS.items()
            ]
        ).T
    return out


def heatmaps_expected(ckpt, book, tokens, edits):
    """xlgpt patch's heatmaps by the reference's activation patching (`ckpt` as written, the clean `tokens` up to
    LastPosition), as the book lays them out."""
    cells = book.patching
    corrupted = cells["corrupted"][: len(tokens)]
    maps = reference.activation_patching(ckpt, tokens, corrupted, cells[C.ANSWER_TOKEN], cells[C.FOIL_TOKEN], edits)
    return laid_out_like_heatmaps(maps, C.PATCHING_HEATMAPS, len(cells["corrupted"]))


def laid_out_like_heatmaps(maps, names, positions):
    """{name: [layer, position]} of {component: map} over the book's `positions` (a position at or after
    LastPosition changes nothing at it: 0); the heads' [layer, head] as they are."""
    pad = lambda component, value: (0, positions - value.shape[1] if component != "head" else 0)
    return {name: np.pad(maps[c], ((0, 0), pad(c, maps[c]))) for c, name in names.items()}


def cached_difference(book, cached, computed, positions=None):
    """The first cell whose cached value (what the book shows before it is recalculated: a viewer that does
    not calculate, a manual book until F9) is not what `computed` ({name: 2-D array}: an engine's values, or
    the reference's) says, as a line; None when every one agrees (numbers within the name's tolerance, token
    ids equal; a cell that computes a text or an error must not cache a number). `positions`: compare only
    the first columns of the per-position names (the prompt's, against the reference)."""
    for name, shown in cached.items():
        if name not in computed:
            continue
        want = np.asarray(computed[name], dtype=float)
        if positions is not None and name in PER_POSITION:
            want = want[:, :positions]
        rect = book.names[name]
        limit = 0.0 if name in EXACT else tolerance(want)
        for (i, j), value in np.ndenumerate(want):
            if i >= shown.shape[0] or j >= shown.shape[1]:
                continue
            got = shown[i, j]
            number = isinstance(got, float) and np.isfinite(got)
            if np.isfinite(value):
                ok = number and abs(got - value) <= limit
            else:  # a text, an error or nothing: no number to show
                ok = not number
            if not ok:
                cell = rect.cell(i, j).ref(absolute=False)
                seen = (
                    "nothing"
                    if got is None
                    else f"{got:.9g}"
                    if isinstance(got, float)
                    else str(got)
                    if isinstance(got, CachedError)
                    else repr(got)
                )
                should = f"{value:.9g}" if np.isfinite(value) else "a text or an error"
                return f"{cell} ({name}) shows {seen}, its cached value, where the book computes {should}"
    return None


def cached_against_reference(book, ckpt, tok, proven):
    """cached_difference of the book as it is (its own inputs) against the reference: what eval checks the cached
    values with when the engines compute an edited copy (--set, --prompt) instead. None when the book's own
    prompt is empty or does not fit it (it then shows a message, which the engines check)."""
    if book.typed:
        try:
            check_prompt(book, book.prompt, tok)
        except XlgptError:
            return None
        tokens = tok.encode(book.prompt)
    else:
        tokens = book.used
    return cached_difference(book, proven.cached, book_expected(book, ckpt, tokens), len(tokens))


def can_compute(engine, book, settings, on_skip, alone):
    """Can `engine` compute `book` here? Before any slow work: if not, an engine asked for alone (or with no
    on_skip) raises why; one of several is dropped, on_skip(engine, why)."""
    why = ENGINES[engine].refusal(book, settings)
    if why is not None and (on_skip is None or alone):
        raise XlgptError(why)
    if why is not None:
        on_skip(engine, why)
    return why is None


# measured: on books up to IRONCALC_FASTEST_UP_TO cells (the bundled model's, the medium shape), and beyond
FASTEST_FIRST = ("ironcalc", "libreoffice", "gnumeric", "formulas")
FASTEST_AT_SCALE = ("libreoffice", "ironcalc", "gnumeric", "formulas")


def fastest_engine(book, settings):
    """The fastest engine that can compute `book` here (an engine absent, or refusing a book of its size, is
    passed over: a 124M book without LibreOffice takes IronCalc's quarter of an hour)."""
    refusals = []
    # in turn: a check may read the book (the formulas engine counts its cells)
    for engine in FASTEST_FIRST if ironcalc_fastest(book) else FASTEST_AT_SCALE:
        why = ENGINES[engine].refusal(book, settings)
        if why is None:
            return engine
        refusals.append(why)
    raise XlgptError(f"no engine here can compute {book.path.name}: " + "; ".join(refusals))


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
    """One result dict per engine (`engines`: a list of names, or "fastest"). `prompt`: type this text into a copy
    of a typed book first; `sets`: NAME[i,j]=VALUE edits of its input cells (interventions, sampling, ...) in that
    copy. With `on_skip`, an engine that cannot compute the book here is dropped (on_skip(engine, why)) instead of
    failing."""
    on_stage(f"reading {path}")
    book = read_book(path)
    ckpt = checkpoint_for(book, weights)
    tok = tokenizer.for_checkpoint(ckpt)
    if book.typed and tok is None:
        raise XlgptError(f"{ckpt.path}: no tokenizer files, so the workbook's prompt cannot be checked")
    if prompt is not None:
        check_prompt(book, prompt, tok)
    for text in sets:
        parse_set(text, book, ckpt.config)  # refuse a bad --set before any slow work
    stages, proven = check_provenance(book, ckpt, tok, template, on_stage)
    edited = bool(sets) or prompt is not None
    if edited:  # the engines compute a copy with other inputs: the book's own cached values against the reference
        on_stage("comparing the cached values with the reference")
        shown = cached_against_reference(book, ckpt, tok, proven)
    settings = {"max_cells": max_cells, "timeout": timeout}
    if engines == "fastest":
        engines = [fastest_engine(book, settings)]
    engines = [e for e in engines if can_compute(e, book, settings, on_skip, len(engines) == 1)]
    with tempfile.TemporaryDirectory(prefix="xlgpt-eval-") as tmp:
        if sets:
            on_stage("editing a copy")
            book = with_edits(book, sets, tmp, ckpt.config)
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
        expected = book_expected(book, ckpt, tokens)
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
            values, stats = ENGINES[engine].values(book, wanted, more=search, **ENGINES[engine].given(settings))
            read = stats.pop("more", None)
            result = {
                **compare(engine, values, expected, tokens, sheet_tokens(values) if book.typed else None),
                **stats,
            }
            if not result["match"] and read is not None and searched:  # None: the engine could not read them
                result["first_difference"] = first_difference(searched, read)
            # what the book shows before it is recalculated, and how it shows it (check/provenance.py)
            result["cached_difference"] = shown if edited else cached_difference(book, proven.cached, values)
            result["display_difference"] = proven.display
            result["match"] = result["match"] and result["cached_difference"] is None
            if tok:
                result["prompt"] = tok.decode(tokens)
                for key in ("token_id", "reference_token_id"):
                    if result[key] is not None:
                        result[key.replace("_id", "_text")] = tok.token_text(result[key])
            result["values"], result["tokenizer"] = values, tok  # api.evaluate shows what the book computed
            results.append(result)
    return results


def evaluate_prompts(
    path, prompts, weights=None, timeout=3600, on_stage=lambda msg: None, template=None, engine="auto"
):
    """Type each prompt into a typed book's Prompt cell with the book loaded ONCE (LibreOffice or IronCalc),
    recalculate and compare with the reference: one result dict per prompt, like evaluate()'s."""
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
    engine = live_engine_for(book, engine)
    if engine not in ("ironcalc", "libreoffice"):
        raise XlgptError(
            "--prompts loads the workbook once, in IronCalc or LibreOffice (--engine ironcalc or libreoffice)"
        )
    stages, proven = check_provenance(book, ckpt, tok, template, on_stage)
    shown = cached_against_reference(book, ckpt, tok, proven)  # the book's own, before any prompt is typed
    results = []
    with loaded(book, engine, timeout, on_stage) as (sheet, peak_rss_mb):
        for text in prompts:
            on_stage(f"prompt {text!r}")
            tokens = tok.encode(text)
            expected = book_expected(book, ckpt, tokens)  # every table the book has, for this prompt
            t0 = time.perf_counter()
            sheet.set(C.PROMPT, text)
            sheet.calculate()
            values = sheet.read(list(expected) + [C.LOGITS_TOKEN_IDS, C.LOGITS_IN_PROMPT])
            seconds = time.perf_counter() - t0
            result = compare(engine, values, expected, tokens, sheet_tokens(values))
            if not result["match"]:
                cache = reference.run(as_written(ckpt), tokens, reference_edits(book, ckpt.config))[1]
                searched = stage_references(stages, cache, len(tokens))
                rects = [rect for _, blocks in searched for rect, *_ in blocks]
                result["first_difference"] = first_difference(searched, sheet.read_rects(rects))
            result.update(
                prompt=tok.decode(tokens),
                seconds=round(seconds, 2),
                load_seconds=round(sheet.load_seconds, 2),
                peak_rss_mb=peak_rss_mb(),
                cached_difference=shown,
                display_difference=proven.display,
            )
            result["match"] = result["match"] and shown is None
            for key in ("token_id", "reference_token_id"):
                if result[key] is not None:
                    result[key.replace("_id", "_text")] = tok.token_text(result[key])
            results.append(result)
    return results


def live_engine_for(book, engine):
    """The engine that loads `book` once for many edits: "auto" is IronCalc where it is the fastest (in this
    process, on books of the bundled size), else LibreOffice."""
    if engine != "auto":
        return engine
    return "ironcalc" if ironcalc_fastest(book) else "libreoffice"


@contextlib.contextmanager
def loaded(book, engine, timeout, on_stage):
    """The book loaded once for many edits: (its live sheet, a function giving the engine's peak memory in MB)."""
    if engine == "ironcalc":
        on_stage(f"loading {book.path.name} into IronCalc")
        sheet = IronCalcSheet(book)
        yield sheet, sheet.peak_rss_mb
        return
    on_stage("starting LibreOffice")
    with LibreOfficeSession(timeout=timeout) as lo:
        on_stage(f"loading {book.path.name}")
        yield lo.open(book.path), lo.peak_rss_mb


def reference_for(book, weights=None):
    """(checkpoint, the reference's logits and predictions) for a token-ids book, as the book lays them out."""
    ckpt = checkpoint_for(book, weights)
    return ckpt, expected_values(ckpt, book.used, reference_edits(book, ckpt.config))
