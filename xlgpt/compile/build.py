"""Compile a checkpoint and tokens into a workbook: spec (pass 1) -> lowering (pass 2) -> writer (pass 3)."""
import os
from pathlib import Path

from .. import XlgptError, __version__
from ..weights.checkpoint import fingerprint
from .lower import PREDICTED_TEXT, TypedPrompt, lower
from .template import load_spec
from ..tokenizer.hf import display
from ..xlsx.writer import BOLD, Cells, Formula, write_workbook


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


def build(ckpt, tokens, out, template=None, progress=None, tokenizer=None, prompt=None, positions=None,
          capacity=None):
    """Write the workbook for `tokens` to `out`; returns (sheets, names) as written.

    With a tokenizer, token ids are shown with their text throughout the book. With a `prompt` too, the
    book tokenizes it itself (Prompt tab and the in-sheet tokenizer, sheet_tokenizer.py) into `positions`
    token positions (default: the prompt's tokens), with the tokenizer's `capacity`; a person can then type
    another prompt."""
    check_tokens(tokens, ckpt.config)
    check_output(out)
    spec = load_spec(ckpt.config, template)
    vocab = [display(tokenizer.token_text(i)) for i in range(ckpt.config.vocab_size)] if tokenizer else None
    if prompt is None:
        sheets, names = lower(spec, ckpt, tokens, about_rows(ckpt, tokens), vocab)
    else:
        sheets, names = typed_book(spec, ckpt, tokens, tokenizer, prompt, positions or len(tokens), capacity, vocab)
    write_workbook(out, sheets, names, progress)
    return sheets, names


def typed_book(spec, ckpt, tokens, tok, prompt, positions, capacity, vocab):
    """Sheets in the order the data flows: Prompt, Chars, Bytes, BPE, Tokens, ..., Output, weights, tables."""
    from ..tokenizer.bpe import Capacity
    from ..tokenizer.tabs import tokenizer_tabs

    if not len(tokens) <= positions <= ckpt.config.n_positions:
        raise XlgptError(f"--positions {positions}: the workbook needs between {len(tokens)} (the prompt's tokens) "
                         f"and {ckpt.config.n_positions} (the model's context) positions")
    capacity = capacity or Capacity()
    cap = Capacity(capacity.chars, capacity.bytes, capacity.rounds, tokens=positions)
    tok_sheets, tok_names = tokenizer_tabs(tok, cap, prompt, vocabulary="Vocabulary")
    about = about_rows(ckpt, tokens) + [
        ("tokenizer capacity", f"{cap.chars} characters, {cap.bytes} UTF-8 bytes, {cap.rounds} merge rounds, "
                               f"{cap.tokens} tokens", None),
        ("tokenizer capacity (numbers)", f"{cap.chars},{cap.bytes},{cap.rounds},{cap.tokens}", "TokenizerCapacity")]
    model_sheets, names = lower(spec, ckpt, [0] * positions, about, vocab, TypedPrompt())
    names.update(tok_names)
    prompt_tab = tok_sheets[0]
    row = prompt_tab.extent()[0] + 2
    prompt_tab.add(Cells(row, 1, [["Predicted next token", None, Formula('IF(ISNUMBER(PredictedToken),PredictedToken,"")'),
                                   Formula(PREDICTED_TEXT)]], style=BOLD))
    prompt_tab.add(Cells(row + 1, 1, [[f"(read at the prompt's last token; the model has {positions} positions, "
                                       f"see the {spec.inputs_tab} tab)"]]))
    return tok_sheets[:4] + model_sheets + tok_sheets[4:], names
