"""Check a workbook: recalculate it with an engine and compare with the NumPy reference."""
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from .. import XlgptError
from ..tokenizer import hf as tokenizer
from . import reference
from ..weights.checkpoint import Checkpoint, fingerprint, load
from .engines import ENGINES, FORMULAS_MAX_CELLS, check_formulas_size, read_book
from ..xlsx.writer import INPUT, copy_with_cell, decimal_values

TOLERANCE = 1e-6


def checkpoint_for(book, weights=None):
    """Load the checkpoint the book was built from (or `weights`) and check it is the same one."""
    path = weights or book.values.get("Checkpoint")
    if not path:
        raise XlgptError(f"{book.path.name}: the workbook does not say which checkpoint it was built from; pass --weights")
    ckpt = load(path)
    recorded = book.values.get("WeightsSha256")
    if recorded and fingerprint(ckpt.path) != recorded:
        raise XlgptError(f"{ckpt.path}: these are not the weights the workbook was built from (sha256 differs)")
    return ckpt


def reference_logits(ckpt, tokens, book):
    if any(not 0 <= t < ckpt.config.vocab_size for t in tokens):
        raise XlgptError(f"{book.path.name}: a token id is outside the vocabulary of {ckpt.path}")
    # The book holds each weight as its shortest float32 decimal; give the reference those same numbers.
    as_written = Checkpoint(ckpt.path, ckpt.config, {k: decimal_values(v) for k, v in ckpt.tensors.items()})
    return reference.logits(as_written, tokens)


def reference_for(book, weights=None):
    ckpt = checkpoint_for(book, weights)
    return ckpt, reference_logits(ckpt, book.tokens, book)


def compare(engine, values, expected, tokens, sheet_tokens=None):
    """One engine's result. For a typed book, `sheet_tokens` are the ids its tokenizer computed and only
    the prompt's positions are compared (the padding after them does not matter)."""
    n = len(tokens)
    logits = values["Logits"].T[:n]  # the book has one column per position
    predictions = values["Predictions"][0][:n]
    finite = n > 0 and np.isfinite(logits).all() and np.isfinite(predictions).all()
    diff = float(np.abs(logits - expected).max()) if finite and logits.shape == expected.shape else float("inf")
    token_id = int(predictions[-1]) if finite else None
    reference_id = int(expected[-1].argmax())
    result = {
        "engine": engine,
        "tokens": tokens if sheet_tokens is None else sheet_tokens,
        "token_id": token_id,
        "reference_token_id": reference_id,
        "max_abs_logit_diff": diff,
        "match": bool(finite and diff <= TOLERANCE and token_id == reference_id
                      and (predictions == expected.argmax(-1)).all()
                      and (sheet_tokens is None or sheet_tokens == tokens)),
    }
    if sheet_tokens is not None:
        result["reference_tokens"] = tokens
    return result


def sheet_tokens(values):
    """The token ids a typed book's tokenizer put in front of the padding."""
    ids, used = values["LogitsTokenIds"][0], values["LogitsInPrompt"][0]
    return [int(i) for i, u in zip(ids, used) if u == 1 and np.isfinite(i)]


def check_prompt(book, text, tok):
    """Refuse, before any slow work, a prompt the typed book cannot take."""
    from ..tokenizer.sheet import needs

    if not book.typed:
        raise XlgptError(f"{book.path.name}: --prompt needs a workbook built from a prompt (this one has fixed "
                         f"token ids; build it with --prompt)")
    if not text:
        raise XlgptError("the prompt is empty")
    have = [int(x) for x in str(book.values.get("TokenizerCapacity", "0,0,0,0")).split(",")]
    for need, cap, what in zip(needs(tok, text), have, ("characters", "UTF-8 bytes", "merge rounds", "tokens (positions)")):
        if need > cap:
            raise XlgptError(f"the prompt needs {need} {what}; this workbook holds {cap} "
                             f"(rebuild it with a larger --capacity or --positions)")


def with_prompt(book, text, directory):
    """A copy of a typed book with `text` in its Prompt cell."""
    from ..tokenizer.sheet import prompt_value

    ref = book.names["Prompt"]
    copy = Path(directory) / book.path.name
    copy_with_cell(book.path, copy, book.sheets.index(ref.sheet) + 1, ref.top, ref.left, prompt_value(text), INPUT)
    return dataclasses.replace(book, path=copy, values={**book.values, "Prompt": text})


def evaluate(path, engines, weights=None, timeout=3600, max_cells=FORMULAS_MAX_CELLS, on_stage=lambda msg: None,
             prompt=None, on_skip=None):
    """One result dict per engine. `prompt`: type this text into a copy of a typed book first.
    With `on_skip`, a book too large for the formulas engine drops it (on_skip(reason)) instead of failing."""
    on_stage(f"reading {path}")
    book = read_book(path)
    ckpt = checkpoint_for(book, weights)
    tok = tokenizer.for_checkpoint(ckpt)
    if book.typed and tok is None:
        raise XlgptError(f"{ckpt.path}: no tokenizer files, so the workbook's prompt cannot be checked")
    if prompt is not None:
        check_prompt(book, prompt, tok)
    if "formulas" in engines:
        try:
            check_formulas_size(book, max_cells)  # refuse before any slow work
        except XlgptError as e:
            if on_skip is None or len(engines) == 1:
                raise
            on_skip(str(e))
            engines = [e for e in engines if e != "formulas"]
    with tempfile.TemporaryDirectory(prefix="xlgpt-eval-") as tmp:
        if prompt is not None:
            on_stage("typing the prompt into a copy")
            book = with_prompt(book, prompt, tmp)
        text = prompt if prompt is not None else book.values.get("Prompt")
        if book.typed and (not isinstance(text, str) or text.startswith("=")):
            raise XlgptError(f"{book.path.name}: the Prompt cell holds a formula; give the text with --prompt")
        tokens = tok.encode(text) if book.typed else book.tokens
        on_stage("computing the NumPy reference")
        expected = reference_logits(ckpt, tokens, book)
        wanted = ["Logits", "Predictions"] + (["LogitsTokenIds", "LogitsInPrompt"] if book.typed else [])
        results = []
        for engine in engines:
            on_stage(f"recalculating with {engine}")
            options = {"max_cells": max_cells} if engine == "formulas" else {"timeout": timeout}
            values, stats = ENGINES[engine](book, wanted, **options)
            result = {**compare(engine, values, expected, tokens, sheet_tokens(values) if book.typed else None),
                      **stats}
            if tok:
                result["prompt"] = tok.decode(tokens)
                for key in ("token_id", "reference_token_id"):
                    if result[key] is not None:
                        result[key.replace("_id", "_text")] = tok.token_text(result[key])
            results.append(result)
    return results
