"""Compile a checkpoint and its input into a workbook: template (pass 1) -> lowering (pass 2) -> writer (pass 3)."""

from xlgpt.compile.inputs import PromptCell, TokenIds
from xlgpt.compile.lower import lower
from xlgpt.compile.template import load_spec
from xlgpt.model.checkpoint import fingerprint
from xlgpt.package import XlgptError
from xlgpt.safefile import check_output
from xlgpt.sheet.contract import About
from xlgpt.sheet.writer import write_workbook
from xlgpt.tokenizer.bpe import Capacity
from xlgpt.tokenizer.tables import display


def check_tokens(tokens, cfg):
    if not tokens:
        raise XlgptError("no tokens given")
    bad = [t for t in tokens if not 0 <= t < cfg.vocab_size]
    if bad:
        raise XlgptError(f"token id {bad[0]} is outside the vocabulary (0..{cfg.vocab_size - 1})")
    if len(tokens) > cfg.n_positions:
        raise XlgptError(f"{len(tokens)} tokens exceed the model's context of {cfg.n_positions}")


def inputs_for(ckpt, tokens, tokenizer=None, prompt=None, positions=None, capacity=None, contrast=None):
    """The book's input: the token ids (and a patching book's `contrast`), or with a `prompt`, a Prompt cell the
    book tokenizes itself into `positions` token positions (default: the prompt's tokens), with the tokenizer's
    `capacity`."""
    check_tokens(tokens, ckpt.config)
    if prompt is None:
        if contrast is not None:
            check_tokens(contrast.corrupted + [contrast.answer, contrast.foil], ckpt.config)
        return TokenIds(list(tokens), contrast)

    positions = positions or len(tokens)
    if not len(tokens) <= positions <= ckpt.config.n_positions:
        raise XlgptError(
            f"--positions {positions}: the workbook needs between {len(tokens)} (the prompt's tokens) "
            f"and {ckpt.config.n_positions} (the model's context) positions"
        )
    capacity = capacity or Capacity()
    return PromptCell(
        tokenizer, prompt, Capacity(capacity.chars, capacity.bytes, capacity.rounds, tokens=positions), positions
    )


def compile_book(ckpt, inputs, about, tokenizer=None, template=None, edits=None, sae=None, training=None, values=True):
    """The one way a book is compiled (build, eval's provenance check, generate and train all come here):
    template -> spec -> lowering into tabs of cell blocks. Returns (layout.Book, defined names). With `values`
    every formula cell also gets the value it computes, cached; without, none (eval compares only formulas)."""
    spec = load_spec(ckpt.config, template, training is not None)
    vocab = [display(tokenizer.token_text(i)) for i in range(ckpt.config.vocab_size)] if tokenizer else None
    return lower(spec, ckpt, inputs, about, vocab, edits, sae, training, values)


def build(
    ckpt,
    tokens,
    out,
    template=None,
    progress=None,
    tokenizer=None,
    prompt=None,
    positions=None,
    capacity=None,
    edits=None,
    sae=None,
    sae_source=None,
    training=None,
    calculation=None,
    contrast=None,
    lens=None,
    values=True,
):
    """Write the workbook for `tokens` to `out`; returns (sheets, names) as written (names[contract.CALCULATION]
    exists when the book's calculation is manual).

    With a tokenizer, token ids are shown with their text throughout the book. With a `prompt` too, the
    book tokenizes it itself (see inputs_for); a person can then type another prompt. `edits`
    (inputs.Edits): the Interventions tab's starting values; `sae` (weights.sae.SAE, loaded from `sae_source`
    as --sae takes it) the Features tab's sparse autoencoder; `training` (backward.Training: the targets and
    the optimizer) makes a training book. `calculation`: "auto" or "manual" (None: by the book's size,
    contract.MANUAL_ABOVE). `contrast` (inputs.Contrast): a patching book's corrupted run. `lens`: where the logit
    lens reads, contract.LENS_EVERY or LENS_LAST (None: by its size, lower.lens_for). `values`: every formula cell
    caches its result (False: none, for a book nobody opens, e.g. generate's temporary one)."""
    inputs = inputs_for(ckpt, tokens, tokenizer, prompt, positions, capacity, contrast)
    check_output(out, [ckpt.path, template])
    cap = inputs.capacity
    # the checkpoint as the user named it (a model name, or a directory as typed), never the builder's absolute
    # path: eval finds it again with --weights' rules, and the sha256 tells whether it is the same
    about = About(
        ckpt.name or str(ckpt.path),
        fingerprint(ckpt.path),
        inputs.kind,
        cap and (cap.chars, cap.bytes, cap.rounds, cap.tokens),
        sae and sae_source,
        calculation,
        lens,
    )
    book, names = compile_book(ckpt, inputs, about, tokenizer, template, edits, sae, training, values)
    sheets = book.sheets()
    write_workbook(out, sheets, names, progress, calculation=book.calculation)
    return sheets, names
