"""Check a workbook: recalculate it with an engine and compare with the NumPy reference."""
import numpy as np

from . import XlgptError, reference, tokenizer
from .checkpoint import Checkpoint, fingerprint, load
from .engines import ENGINES, FORMULAS_MAX_CELLS, check_formulas_size, read_book
from .xlsx import decimal_values

TOLERANCE = 1e-6


def reference_for(book, weights=None):
    """Load the checkpoint the book was built from (or `weights`) and check it is the same one."""
    path = weights or book.values.get("Checkpoint")
    if not path:
        raise XlgptError(f"{book.path.name}: the workbook does not say which checkpoint it was built from; pass --weights")
    ckpt = load(path)
    recorded = book.values.get("WeightsSha256")
    if recorded and fingerprint(ckpt.path) != recorded:
        raise XlgptError(f"{ckpt.path}: these are not the weights the workbook was built from (sha256 differs)")
    if any(not 0 <= t < ckpt.config.vocab_size for t in book.tokens):
        raise XlgptError(f"{book.path.name}: a token id is outside the vocabulary of {ckpt.path}")
    # The book holds each weight as its shortest float32 decimal; give the reference those same numbers.
    as_written = Checkpoint(ckpt.path, ckpt.config, {k: decimal_values(v) for k, v in ckpt.tensors.items()})
    return ckpt, reference.logits(as_written, book.tokens)


def compare(engine, values, expected, tokens):
    logits = values["Logits"].T  # the book has one column per position
    predictions = values["Predictions"][0]
    finite = np.isfinite(logits).all() and np.isfinite(predictions).all()
    diff = float(np.abs(logits - expected).max()) if finite and logits.shape == expected.shape else float("inf")
    token_id = int(predictions[-1]) if finite else None
    reference_id = int(expected[-1].argmax())
    return {
        "engine": engine,
        "tokens": tokens,
        "token_id": token_id,
        "reference_token_id": reference_id,
        "max_abs_logit_diff": diff,
        "match": bool(finite and diff <= TOLERANCE and token_id == reference_id
                      and (predictions == expected.argmax(-1)).all()),
    }


def evaluate(path, engines, weights=None, timeout=3600, max_cells=FORMULAS_MAX_CELLS, on_stage=lambda msg: None):
    """One result dict per engine."""
    on_stage(f"reading {path}")
    book = read_book(path)
    if "formulas" in engines:
        check_formulas_size(book, max_cells)  # refuse before any slow work
    on_stage("computing the NumPy reference")
    ckpt, expected = reference_for(book, weights)
    tok = tokenizer.for_checkpoint(ckpt)
    results = []
    for engine in engines:
        on_stage(f"recalculating with {engine}")
        options = {"timeout": timeout} if engine == "libreoffice" else {"max_cells": max_cells}
        values, stats = ENGINES[engine](book, ["Logits", "Predictions"], **options)
        result = {**compare(engine, values, expected, book.tokens), **stats}
        if tok:
            result["prompt"] = tok.decode(book.tokens)
            for key in ("token_id", "reference_token_id"):
                if result[key] is not None:
                    result[key.replace("_id", "_text")] = tok.token_text(result[key])
        results.append(result)
    return results
