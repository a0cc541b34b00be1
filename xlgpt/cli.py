"""The xlgpt command line: weights, build, eval, predict."""
import json
import sys
import time
from pathlib import Path

import click

from . import XlgptError, __version__
from .engines import FORMULAS_MAX_CELLS


def parse_tokens(text):
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(parts):
        raise XlgptError(f"--tokens: expected comma-separated token ids, got {text!r}")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise XlgptError(f"--tokens: {text!r} is not a comma-separated list of integers")


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
    from .checkpoint import Config, random_tensors, save

    cfg = Config(layers, embd, heads, vocab, context)
    tensors = random_tensors(cfg, seed)
    save(out, cfg, tensors)
    n = sum(t.size for t in tensors.values())
    click.echo(f"wrote {out}: {n:,} parameters ({layers} layers, {embd} features, {heads} heads, "
               f"vocabulary {vocab}, context {context}, seed {seed})")


@cli.command()
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), required=True,
              help="checkpoint directory (config.json + model.safetensors)")
@click.option("--tokens", required=True, help="comma-separated token ids, e.g. 5,17,42,7")
@click.option("--out", type=click.Path(path_type=Path), default="book.xlsx", show_default=True,
              help="workbook to write")
@click.option("--template", type=click.Path(path_type=Path), default=None,
              help="transformer description to compile (default: templates/gpt2.toml)")
def build(weights_dir, tokens, out, template):
    """Compile a checkpoint and a prompt into a workbook of formulas."""
    from tqdm import tqdm

    from .build import build as build_book, check_output
    from .checkpoint import load

    token_ids = parse_tokens(tokens)
    check_output(out)
    t0 = time.perf_counter()
    ckpt = load(weights_dir)
    bar = tqdm(total=0, unit=" rows", disable=None, file=sys.stderr, leave=False)
    state = {"sheet": None, "done": 0}

    def progress(sheet, rows):
        if sheet is not state["sheet"]:
            state.update(sheet=sheet, done=0)
            bar.reset(total=sheet.extent()[0])
            bar.set_description(sheet.name)
        bar.update(rows - state["done"])
        state["done"] = rows

    try:
        sheets, _ = build_book(ckpt, token_ids, out, template, progress)
    finally:
        bar.close()
    counts = [s.cell_counts() for s in sheets]
    constants, formulas = sum(c[0] for c in counts), sum(c[1] for c in counts)
    click.echo(f"wrote {out}: {len(sheets)} tabs, {constants:,} constant cells, {formulas:,} formula cells, "
               f"{out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")


@cli.command("eval")
@click.argument("book", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(["formulas", "libreoffice", "both"]), default="both", show_default=True)
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), default=None,
              help="checkpoint for the reference (default: the one recorded in the workbook)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per engine")
@click.option("--max-cells", type=click.IntRange(min=1), default=FORMULAS_MAX_CELLS, show_default=True,
              help="refuse books with more cells than this with the formulas engine")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, show_default=True,
              help="seconds LibreOffice may take")
def eval_cmd(book, engine, weights_dir, as_json, max_cells, timeout):
    """Recalculate a workbook with a spreadsheet engine and check it against the NumPy reference.

    Exit status: 0 when every engine matches (same prediction, logits within 1e-6), 1 on a mismatch,
    2 on bad input."""
    from .engines import FORMULAS_MAX_CELLS
    from .verify import evaluate

    chosen = ["formulas", "libreoffice"] if engine == "both" else [engine]
    def show_stage(msg):  # like the progress bars: only for a person at a terminal
        if sys.stderr.isatty():
            click.echo(f"· {msg}", err=True)

    results = evaluate(book, chosen, weights_dir, timeout=timeout, max_cells=max_cells, on_stage=show_stage)
    for r in results:
        if as_json:
            click.echo(json.dumps(r))
        else:
            verdict = "MATCH" if r["match"] else "MISMATCH"
            click.echo(f"{r['engine']:>11}: next token {r['token_id']} (reference {r['reference_token_id']}), "
                       f"max |logit diff| {r['max_abs_logit_diff']:.2e} — {verdict} "
                       f"[{r['seconds']} s, {r['peak_rss_mb']} MB]")
    sys.exit(0 if all(r["match"] for r in results) else 1)


@cli.command()
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path), required=True,
              help="checkpoint directory")
@click.option("--tokens", required=True, help="comma-separated token ids")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def predict(weights_dir, tokens, top_k, as_json):
    """Predict the next token with the NumPy reference (no spreadsheet involved)."""
    import numpy as np

    from . import reference
    from .build import check_tokens
    from .checkpoint import load

    token_ids = parse_tokens(tokens)
    ckpt = load(weights_dir)
    check_tokens(token_ids, ckpt.config)
    logits = reference.logits(ckpt, token_ids)[-1]
    probs = reference.softmax(logits)
    top = [int(i) for i in np.argsort(-logits, kind="stable")[:top_k]]
    rows = [{"token_id": i, "logit": float(logits[i]), "probability": float(probs[i])} for i in top]
    if as_json:
        click.echo(json.dumps({"tokens": token_ids, "token_id": top[0], "top": rows}))
    else:
        for rank, r in enumerate(rows, 1):
            click.echo(f"{rank}. token {r['token_id']:>6}  logit {r['logit']:9.4f}  p {r['probability']:.4f}")


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
