"""Compile a checkpoint and tokens into a workbook: spec (pass 1) -> lowering (pass 2) -> writer (pass 3)."""
import os
from pathlib import Path

from . import XlgptError, __version__
from .checkpoint import fingerprint
from .lower import lower
from .spec import load_spec
from .tokenizer import display
from .xlsx import write_workbook


def check_tokens(tokens, cfg):
    if not tokens:
        raise XlgptError("no tokens given")
    bad = [t for t in tokens if not 0 <= t < cfg.vocab_size]
    if bad:
        raise XlgptError(f"token id {bad[0]} is outside the vocabulary (0..{cfg.vocab_size - 1})")
    if len(tokens) > cfg.n_positions:
        raise XlgptError(f"{len(tokens)} tokens exceed the model's context of {cfg.n_positions}")


def check_output(out):
    """Fail fast, before any heavy work, when the output cannot be written."""
    parent = Path(out).resolve().parent
    if not parent.is_dir():
        raise XlgptError(f"{out}: directory {parent} does not exist")
    if Path(out).is_dir():
        raise XlgptError(f"{out}: is a directory")
    if not os.access(parent, os.W_OK):
        raise XlgptError(f"{out}: directory {parent} is not writable")


def about_rows(ckpt, tokens):
    cfg = ckpt.config
    return [
        ("model", f"GPT-2: {cfg.n_layer} layers, {cfg.n_embd} features, {cfg.n_head} heads, "
                  f"vocabulary {cfg.vocab_size}, context {cfg.n_positions}", None),
        ("parameters", ckpt.n_params, None),
        ("checkpoint", str(ckpt.path.resolve()), "Checkpoint"),
        ("weights sha256", fingerprint(ckpt.path), "WeightsSha256"),
        ("built by", f"xlgpt {__version__}", None),
    ]


def build(ckpt, tokens, out, template=None, progress=None, tokenizer=None):
    """Write the workbook for `tokens` to `out`; returns (sheets, names) as written.

    With a tokenizer, token ids are shown with their text throughout the book."""
    check_tokens(tokens, ckpt.config)
    check_output(out)
    spec = load_spec(ckpt.config, template)
    vocab = [display(tokenizer.token_text(i)) for i in range(ckpt.config.vocab_size)] if tokenizer else None
    sheets, names = lower(spec, ckpt, tokens, about_rows(ckpt, tokens), vocab)
    write_workbook(out, sheets, names, progress)
    return sheets, names
