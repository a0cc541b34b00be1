"""The xlgpt command line: weights, build, eval, predict."""
import json
import sys
import time
from pathlib import Path

import click

from . import XlgptError, __version__
from .check.engines import FORMULAS_MAX_CELLS


def parse_tokens(text):
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(parts):
        raise XlgptError(f"--tokens: expected comma-separated token ids, got {text!r}")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise XlgptError(f"--tokens: {text!r} is not a comma-separated list of integers")


DEFAULT_PROMPT = "O Romeo, Romeo, wherefore art"


def resolve_weights(name):
    """--weights: a directory, a model name (hub cache, imported, bundled), or the bundled default."""
    from .weights.hub import resolve
    from .tokenizer.hf import WEIGHTS_DIR

    return resolve(name or "shakespeare", bundled_dir=WEIGHTS_DIR)


def model_and_tokens(weights, tokens, prompt):
    """Load the checkpoint, its tokenizer (if any), the input token ids from --tokens or --prompt, and the
    prompt text (None with --tokens)."""
    from .tokenizer import hf as tk
    from .compile.build import check_tokens
    from .weights.checkpoint import load

    if tokens is not None and prompt is not None:
        raise XlgptError("give either --tokens or --prompt, not both")
    ckpt = load(resolve_weights(weights))
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
            raise XlgptError(f"the prompt is {len(ids)} tokens, more than the model's context of {ckpt.config.n_positions}")
    else:
        ids = parse_tokens(tokens)
    check_tokens(ids, ckpt.config)
    return ckpt, tok, ids, prompt


def emit_error(message, code=2):
    click.echo(f"xlgpt: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xlgpt")
def cli():
    """Compile GPT-2 into an Excel workbook of plain formulas, and prove it computes the right thing.

    \b
    xlgpt weights random --layers 2 --embd 64 --heads 4 --vocab 300 --context 32 --out ckpt/
    xlgpt build --weights ckpt/ --tokens 5,17,42,7 --out book.xlsx
    xlgpt eval book.xlsx --engine both
    xlgpt predict --weights ckpt/ --tokens 5,17,42,7
    """


@cli.group()
def weights():
    """Make or fetch GPT-2 checkpoints (Hugging Face format: config.json + model.safetensors)."""


@weights.command("random")
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True, help="n_layer")
@click.option("--embd", type=click.IntRange(min=1), default=64, show_default=True, help="n_embd")
@click.option("--heads", type=click.IntRange(min=1), default=4, show_default=True, help="n_head (must divide --embd)")
@click.option("--vocab", type=click.IntRange(min=1), default=300, show_default=True, help="vocab_size")
@click.option("--context", type=click.IntRange(min=1), default=32, show_default=True, help="n_positions")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed: same seed, same weights")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="directory to create")
def weights_random(layers, embd, heads, vocab, context, seed, out):
    """Write a seeded random GPT-2 checkpoint of any shape (124M: --layers 12 --embd 768 --heads 12
    --vocab 50257 --context 1024)."""
    from .weights.checkpoint import Config, random_tensors, save

    cfg = Config(layers, embd, heads, vocab, context)
    tensors = random_tensors(cfg, seed)
    save(out, cfg, tensors)
    n = sum(t.size for t in tensors.values())
    click.echo(f"wrote {out}: {n:,} parameters ({layers} layers, {embd} features, {heads} heads, "
               f"vocabulary {vocab}, context {context}, seed {seed})")


WEIGHTS_HELP = ("checkpoint directory (config.json + model.safetensors) or model name (gpt2, an imported "
                "model, ...); default: the bundled Shakespeare model")


def weights_option(f):
    return click.option("--weights", "weights", default=None, help=WEIGHTS_HELP)(f)


def input_options(f):
    f = click.option("--prompt", default=None, help="text to tokenize with the model's tokenizer")(f)
    return click.option("--tokens", default=None, help="comma-separated token ids, e.g. 5,17,42,7")(f)


@weights.command("download")
@click.argument("name")
def weights_download(name):
    """Download NAME (gpt2, distilgpt2, gpt2-medium, ... or any GPT-2 repo id) from the Hugging Face hub
    into its standard cache; afterwards --weights NAME works offline."""
    from .weights.hub import count_parameters, download

    path = download(name)
    click.echo(f"downloaded {name}: {count_parameters(path):,} parameters, in {path}")


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def weights_list(as_json):
    """Show the bundled, downloaded and imported models."""
    from .weights.hub import list_models
    from .tokenizer.hf import WEIGHTS_DIR

    models = list_models(WEIGHTS_DIR)
    if as_json:
        click.echo(json.dumps([{**m, "path": str(m["path"])} for m in models]))
        return
    if not models:
        click.echo("no models; try: xlgpt weights download gpt2")
    for m in models:
        click.echo(f"{m['name']:<32} {m['source']:<9} {m['parameters']:>13,} parameters "
                   f"{m['size_bytes'] / 1e6:>9.1f} MB  {m['path']}")


@weights.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="name to use with --weights (default: the file or directory name)")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="config.json, when it is not beside a .safetensors file")
def weights_import(path, name, config):
    """Import a local checkpoint: a directory (config.json + model.safetensors), a .safetensors file, or a
    PyTorch .bin (needs torch; loaded with weights_only=True, never unpickling code)."""
    from .weights.hub import count_parameters, import_model

    dest = import_model(path, name, config)
    click.echo(f"imported {dest.name}: {count_parameters(dest):,} parameters, in {dest}")


def parse_capacity(text):
    """--capacity: CHARS,BYTES,ROUNDS, or "fit" (None: sized to the prompt)."""
    from .tokenizer.sheet import Capacity

    if text == "fit":
        return None
    try:
        return Capacity(*(int(x) for x in text.split(",")))
    except (TypeError, ValueError):
        raise XlgptError(f"--capacity: expected CHARS,BYTES,ROUNDS (e.g. 256,512,100) or 'fit', got {text!r}")


DEFAULT_POSITIONS = 32


@cli.command()
@weights_option
@input_options
@click.option("--out", type=click.Path(path_type=Path), default="book.xlsx", show_default=True,
              help="workbook to write")
@click.option("--template", type=click.Path(path_type=Path), default=None,
              help="transformer description to compile (default: templates/gpt2.toml)")
@click.option("--prompt-cell/--no-prompt-cell", default=True, show_default=True,
              help="with a prompt: put it in a Prompt cell that the workbook tokenizes itself, so a person can "
                   "type another prompt (--no-prompt-cell: fixed token ids, as with --tokens)")
@click.option("--positions", type=click.IntRange(min=1), default=None,
              help=f"token positions of a prompt-cell book: the longest prompt it takes [default: the prompt's "
                   f"tokens, at least {DEFAULT_POSITIONS} (up to the model's context); with --capacity fit, "
                   f"the prompt's tokens]")
@click.option("--capacity", default="256,512,100", show_default=True,
              help="the in-sheet tokenizer's capacity: CHARS,BYTES,ROUNDS (a word of up to ROUNDS+1 bytes always "
                   "tokenizes), or 'fit' for the smallest that holds the prompt (for the formulas engine)")
def build(weights, tokens, prompt, out, template, prompt_cell, positions, capacity):
    """Compile a checkpoint and a prompt into a workbook of formulas.

    With no options: the bundled Shakespeare model and a default prompt, in a Prompt cell that a person
    can change."""
    from tqdm import tqdm

    from .compile.build import build as build_book, check_output
    from .tokenizer.sheet import capacity_for

    check_output(out)
    cap = parse_capacity(capacity)
    t0 = time.perf_counter()
    ckpt, tok, token_ids, text = model_and_tokens(weights, tokens, prompt)
    typed = prompt_cell and text is not None
    if typed:
        context = ckpt.config.n_positions
        need = capacity_for([text], tok)
        if cap is None:
            cap, positions = need, positions or len(token_ids)
        else:  # never smaller than the prompt needs
            cap = cap.at_least(need)
        positions = positions or min(context, max(len(token_ids), DEFAULT_POSITIONS))
    bar = tqdm(total=0, unit=" rows", disable=None, file=sys.stderr, leave=False)
    state = {"sheet": None, "done": 0}

    def progress(sheet, rows):  # rows: the sheet's rows written so far
        if sheet is not state["sheet"]:
            state.update(sheet=sheet, done=0)
            bar.reset(total=sheet.extent()[0])
            bar.set_description(sheet.name)
        bar.update(rows - state["done"])
        state["done"] = rows

    try:
        sheets, _ = build_book(ckpt, token_ids, out, template, progress, tok,
                               **(dict(prompt=text, positions=positions, capacity=cap) if typed else {}))
    finally:
        bar.close()
    counts = [s.cell_counts() for s in sheets]
    constants, formulas = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if tok:
        click.echo(f"prompt: {tok.decode(token_ids)!r} ({len(token_ids)} tokens)")
    if typed:
        click.echo(f"prompt cell: the workbook tokenizes it itself (up to {positions} tokens; {cap.chars} characters, "
                   f"{cap.bytes} bytes, {cap.rounds} merge rounds)")
    click.echo(f"wrote {out}: {len(sheets)} tabs, {constants:,} constant cells, {formulas:,} formula cells, "
               f"{out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")


@cli.command("eval")
@click.argument("book", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(["auto", "formulas", "libreoffice", "both"]), default="auto",
              show_default=True, help="auto: both engines, or LibreOffice alone for books beyond the formulas engine")
@click.option("--weights", "weights", default=None,
              help="checkpoint for the reference (default: the one recorded in the workbook)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per engine")
@click.option("--max-cells", type=click.IntRange(min=1), default=FORMULAS_MAX_CELLS, show_default=True,
              help="refuse books with more cells than this with the formulas engine")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, show_default=True,
              help="seconds LibreOffice may take")
@click.option("--prompt", default=None,
              help="type this text into the Prompt cell of a copy of the workbook (built from a prompt) first")
def eval_cmd(book, engine, weights, as_json, max_cells, timeout, prompt):
    """Recalculate a workbook with a spreadsheet engine and check it against the NumPy reference.

    Exit status: 0 when every engine matches (same prediction, logits within 1e-6), 1 on a mismatch,
    2 on bad input."""
    from .check.engines import FORMULAS_MAX_CELLS
    from .check.verify import evaluate

    chosen = ["formulas", "libreoffice"] if engine in ("auto", "both") else [engine]
    def show_stage(msg):  # like the progress bars: only for a person at a terminal
        if sys.stderr.isatty():
            click.echo(f"· {msg}", err=True)

    weights_dir = resolve_weights(weights) if weights else None
    results = evaluate(book, chosen, weights_dir, timeout=timeout, max_cells=max_cells, on_stage=show_stage,
                       prompt=prompt, on_skip=(lambda why: click.echo(f"skipping the formulas engine: {why}", err=True))
                       if engine == "auto" else None)
    if not as_json and results and "prompt" in results[0]:
        click.echo(f"prompt: {results[0]['prompt']!r}")
    if not as_json and results and "reference_tokens" in results[0]:
        click.echo(f"tokens (tokenizers library): {','.join(map(str, results[0]['reference_tokens']))}")
    for r in results:
        if as_json:
            click.echo(json.dumps(r))
        else:
            verdict = "MATCH" if r["match"] else "MISMATCH"
            text = lambda key: f" {r[key]!r}" if key in r else ""
            click.echo(f"{r['engine']:>11}: next token {r['token_id']}{text('token_text')} "
                       f"(reference {r['reference_token_id']}{text('reference_token_text')}), "
                       f"max |logit diff| {r['max_abs_logit_diff']:.2e} — {verdict} "
                       f"[{r['seconds']} s, {r['peak_rss_mb']} MB]")
            if "reference_tokens" in r and r["tokens"] != r["reference_tokens"]:
                click.echo(f"{'':>11}  the sheet tokenized the prompt as {','.join(map(str, r['tokens'])) or 'nothing'}")
    sys.exit(0 if all(r["match"] for r in results) else 1)


@cli.command()
@weights_option
@input_options
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--generate", type=click.IntRange(min=1), default=None,
              help="instead, continue the prompt greedily (temperature 0) by this many tokens")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def predict(weights, tokens, prompt, top_k, generate, as_json):
    """Predict the next token with the NumPy reference (no spreadsheet involved)."""
    import numpy as np

    from .check import reference

    ckpt, tok, token_ids, _ = model_and_tokens(weights, tokens, prompt)
    if generate:
        context = ckpt.config.n_positions
        new = []
        for _ in range(generate):  # the window slides once the context is full
            new.append(int(reference.logits(ckpt, (token_ids + new)[-context:])[-1].argmax()))
        if as_json:
            click.echo(json.dumps({"tokens": token_ids, "generated": new,
                                   **({"text": tok.decode(new)} if tok else {})}))
        else:
            click.echo(tok.decode(token_ids + new) if tok else ",".join(map(str, new)))
        return
    logits = reference.logits(ckpt, token_ids)[-1]
    probs = reference.softmax(logits)
    top = [int(i) for i in np.argsort(-logits, kind="stable")[:top_k]]
    rows = [{"token_id": i, "logit": float(logits[i]), "probability": float(probs[i]),
             **({"text": tok.token_text(i)} if tok else {})} for i in top]
    if as_json:
        click.echo(json.dumps({"tokens": token_ids, "token_id": top[0], "top": rows}))
        return
    if tok:
        click.echo(f"prompt: {tok.decode(token_ids)!r} ({len(token_ids)} tokens)")
    for rank, r in enumerate(rows, 1):
        text = f"  {r['text']!r}" if tok else ""
        click.echo(f"{rank}. token {r['token_id']:>6}{text}  logit {r['logit']:9.4f}  p {r['probability']:.4f}")


@cli.command()
@click.argument("text", nargs=-1, required=True)
@weights_option
@click.option("--tokenizer", "tokenizer_name", default=None,
              help="'gpt2' (bundled GPT-2 tokenizer files) or a directory of tokenizer files; "
                   "default: the tokenizer of --weights")
@click.option("--engine", type=click.Choice(["formulas", "libreoffice"]), default=None,
              help="tokenize with the spreadsheet itself: build tokenizer workbooks, recalculate them with "
                   "this engine and compare with the tokenizers library (exit 1 on a difference)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON list")
def tokenize(text, weights, tokenizer_name, engine, as_json):
    """Print the token ids and token strings of each TEXT."""
    from .tokenizer import hf as tk
    from .weights.checkpoint import load

    if tokenizer_name:
        tok = tk.load(tokenizer_name)
    else:
        tok = tk.for_checkpoint(load(resolve_weights(weights)))
        if tok is None:
            raise XlgptError("this model has no tokenizer files; choose one with --tokenizer")
    if engine:
        from .tokenizer.sheet import tokenize_with_sheets

        sheets = tokenize_with_sheets(tok, text, engine)
    results = []
    for i, t in enumerate(text):
        reference = tok.hf.encode(t).ids if engine else tok.encode(t)
        r = {"text": t, "tokens": reference}
        if engine:
            sheet = sheets[i]
            r.update(tokens=sheet.ids, reference=reference, match=sheet.ok and sheet.ids == reference)
            if not sheet.ok:
                r["status"] = sheet.status
        r["strings"] = [tok.token_text(i) if isinstance(i, int) else str(i) for i in r["tokens"]]
        results.append(r)
    if as_json:
        click.echo(json.dumps(results, ensure_ascii=False))
    else:
        for r in results:
            verdict = "" if "match" not in r else (" — MATCH" if r["match"] else f" — MISMATCH, tokenizers: {r['reference']}")
            click.echo(f"{r['text']!r}: {len(r['tokens'])} tokens{verdict}")
            click.echo("  ids:     " + ",".join(map(str, r["tokens"])))
            click.echo("  strings: " + " ".join(repr(x) for x in r["strings"]))
            if r.get("status"):
                click.echo(f"  sheet:   {r['status']}")
    if engine and not all(r["match"] for r in results):
        sys.exit(1)


@cli.command()
@click.option("--sae", "sae_source", default=None,
              help="SAE folder in SAELens layout (cfg.json + sae_weights.safetensors), or hub repo id "
                   "owner/name[/folder]; default: the bundled Shakespeare SAE")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="only the K features that fire most often (default: all, by index)")
@click.option("--search", default=None, help="only features whose label or top tokens contain WORD (any case)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def features(sae_source, top, search, as_json):
    """List a sparse autoencoder's labelled features: index, label, top tokens, how often it fires."""
    from .tokenizer.hf import display
    from .weights.sae import load_sae

    sae = load_sae(sae_source, progress=sys.stderr.isatty())
    info = sae.features or {}
    rows = info.get("features") or [{"index": i, "label": "", "frequency": None, "top_tokens": []}
                                    for i in range(sae.d_sae)]
    if search:
        word = search.lower()
        rows = [r for r in rows if word in r["label"].lower() or any(word in t["token"].lower() for t in r["top_tokens"])]
    if top:
        rows = sorted(rows, key=lambda r: -(r["frequency"] or 0))[:top]
    if as_json:
        click.echo(json.dumps({"path": str(sae.path), "hook_name": sae.hook_name, "d_in": sae.d_in, "d_sae": sae.d_sae,
                               "model_name": sae.model_name, "figures": info.get("figures"), "features": rows},
                              ensure_ascii=False))
        return
    figures = info.get("figures")
    click.echo(f"{sae.path}: {sae.d_sae} features on {sae.hook_name} ({sae.d_in} dimensions)"
               + (f"; FVE {figures['fraction_of_variance_explained']:.3f}, mean L0 {figures['mean_l0']:.1f}, "
                  f"{figures['dead_features']} dead" if figures else "; no features.json, so no labels"))
    for r in rows:
        tokens = " ".join(f"{display(t['token'])}×{t['count']}" for t in r["top_tokens"][:4])
        freq = f"{r['frequency']:8.3%}" if r["frequency"] is not None else " " * 8
        click.echo(f"{r['index']:>5}  {freq}  {r['label']:<28}  {tokens}")
    if not rows:
        click.echo(f"no feature matches {search!r}" if search else "no features")


def main():
    try:
        cli.main(standalone_mode=False)
    except XlgptError as e:
        emit_error(e)
    except click.exceptions.Abort:
        emit_error("interrupted", 130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except KeyboardInterrupt:
        emit_error("interrupted", 130)
