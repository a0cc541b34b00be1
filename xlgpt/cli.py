"""The xlgpt command line: parse the options, call xlgpt.api, print. Nothing here computes."""

import json
import math
import os
import signal
import sys
from pathlib import Path

import click
from tqdm import tqdm

from xlgpt import api
from xlgpt.check.provenance import NotCompiled
from xlgpt.check.verify import describe_difference
from xlgpt.drive.train import Diverged
from xlgpt.engines.formulas import FORMULAS_MAX_CELLS
from xlgpt.model.hub import count_parameters, download, import_model, list_models
from xlgpt.package import XlgptError, __version__
from xlgpt.sheet.contract import LENS_EVERY_POSITION_UP_TO, MANUAL_ABOVE
from xlgpt.tokenizer.bpe import Capacity
from xlgpt.tokenizer.hf import WEIGHTS_DIR
from xlgpt.tokenizer.tables import display


def parse_tokens(text):
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(parts):
        raise XlgptError(f"--tokens: expected comma-separated token ids, got {text!r}")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise XlgptError(f"--tokens: {text!r} is not a comma-separated list of integers")


class FiniteFloat(click.FloatRange):
    """A float option that is a finite number (click's FloatRange lets NaN through, and infinity when unbounded)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def error_line(message):
    click.echo(f"xlgpt: error: {message}", err=True)


def interrupted(message, code):
    """One line, then exit at once, without the atexit handlers: multiprocessing's would wait for writer workers
    that a signal to the whole process group may have left stuck. The unwinding has removed every temporary
    file and stopped every engine, but for a cleanup the signal kept from starting: that one runs here."""
    api.clean_up_all()
    error_line(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=2**64 - 1),
    default=0,
    show_default=True,
    help="random seed: same seed, same weights",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="directory to create")
def weights_random(layers, embd, heads, vocab, context, seed, out):
    """Write a seeded random GPT-2 checkpoint of any shape (124M: --layers 12 --embd 768 --heads 12
    --vocab 50257 --context 1024)."""
    n = api.random_weights(out, layers, embd, heads, vocab, context, seed)
    click.echo(
        f"wrote {out}: {n:,} parameters ({layers} layers, {embd} features, {heads} heads, "
        f"vocabulary {vocab}, context {context}, seed {seed})"
    )


WEIGHTS_HELP = (
    "checkpoint directory (config.json + model.safetensors) or model name (gpt2, an imported "
    "model, ...); default: the bundled Shakespeare model"
)


def weights_option(f):
    return click.option("--weights", "weights", default=None, help=WEIGHTS_HELP)(f)


def live_engine_option(f):
    """generate's and train's --engine: the spreadsheet that computes every step of the loop."""
    return click.option(
        "--engine",
        type=click.Choice(["auto", "libreoffice", "ironcalc", "formulas"]),
        default="auto",
        show_default=True,
        help="the spreadsheet that computes every step (auto: LibreOffice where installed, else IronCalc; ironcalc "
        "and formulas: in this process, recomputing the whole book at every step; formulas: small models only)",
    )(f)


def input_options(f):
    f = click.option("--prompt", default=None, help="text to tokenize with the model's tokenizer")(f)
    return click.option("--tokens", default=None, help="comma-separated token ids, e.g. 5,17,42,7")(f)


@weights.command("download")
@click.argument("name")
def weights_download(name):
    """Download NAME (gpt2, distilgpt2, gpt2-medium, ... or any GPT-2 repo id) from the Hugging Face hub
    into its standard cache; afterwards --weights NAME works offline."""

    path = download(name)
    click.echo(f"downloaded {name}: {count_parameters(path):,} parameters, in {path}")


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def weights_list(as_json):
    """Show the bundled, downloaded and imported models."""

    models = list_models(WEIGHTS_DIR)
    if as_json:
        click.echo(json.dumps([{**m, "path": str(m["path"])} for m in models]))
        return
    if not models:
        click.echo("no models; try: xlgpt weights download gpt2")
    for m in models:
        click.echo(
            f"{m['name']:<32} {m['source']:<9} {m['parameters']:>13,} parameters "
            f"{m['size_bytes'] / 1e6:>9.1f} MB  {m['path']}"
        )


@weights.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="name to use with --weights (default: the file or directory name)")
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help="config.json, when it is not beside a .safetensors file",
)
def weights_import(path, name, config):
    """Import a local checkpoint: a directory (config.json + model.safetensors), a .safetensors file, or a
    PyTorch .bin (needs torch; loaded with weights_only=True, never unpickling code)."""

    dest = import_model(path, name, config)
    click.echo(f"imported {dest.name}: {count_parameters(dest):,} parameters, in {dest}")


def _default_capacity():
    return Capacity()


def parse_capacity(text):
    """--capacity: CHARS,BYTES,ROUNDS, or "fit" (None: sized to the prompt)."""

    if text == "fit":
        return None
    try:
        numbers = [int(x) for x in text.split(",")]
    except ValueError:
        numbers = None
    if numbers is None or len(numbers) != 3:
        raise XlgptError(
            f"--capacity: expected CHARS,BYTES,ROUNDS (three numbers, e.g. 256,512,64) or 'fit', got {text!r}"
        )
    return Capacity(*numbers)


@cli.command()
@weights_option
@input_options
@click.option(
    "--out", type=click.Path(path_type=Path), default="book.xlsx", show_default=True, help="workbook to write"
)
@click.option(
    "--force",
    is_flag=True,
    help="replace --out even if it is a workbook xlgpt did not write (without it, only xlgpt's own are replaced)",
)
@click.option(
    "--template",
    type=click.Path(path_type=Path),
    default=None,
    help="transformer description to compile (default: templates/gpt2.toml)",
)
@click.option(
    "--prompt-cell/--no-prompt-cell",
    default=True,
    show_default=True,
    help="with a prompt: put it in a Prompt cell that the workbook tokenizes itself, so a person can "
    "type another prompt (--no-prompt-cell: fixed token ids, as with --tokens)",
)
@click.option(
    "--positions",
    type=click.IntRange(min=1),
    default=None,
    help=f"token positions of a prompt-cell book: the longest prompt it takes [default: the prompt's "
    f"tokens, at least {api.DEFAULT_POSITIONS} (up to the model's context); with --capacity fit, "
    f"the prompt's tokens]",
)
@click.option(
    "--capacity",
    default="{0.chars},{0.bytes},{0.rounds}".format(Capacity()),
    show_default="256,512,64",
    help="the in-sheet tokenizer's capacity: CHARS,BYTES,ROUNDS (a word of up to ROUNDS+1 bytes always "
    "tokenizes), or 'fit' for the smallest that holds the prompt (for the formulas engine)",
)
@click.option("--steer-from", default=None, help="ActAdd: steer away from this text ...")
@click.option(
    "--steer-to",
    default=None,
    help="... towards this one: the difference of their residual streams entering --steer-layer, at their last tokens",
)
@click.option(
    "--steer-vector",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="the steering vector from a .npy or .safetensors file (one tensor of n_embd numbers)",
)
@click.option(
    "--steer-feature",
    type=click.IntRange(min=0),
    default=None,
    help="steer along this SAE feature's decoder direction (layer: the SAE's block)",
)
@click.option(
    "--sae",
    "sae_source",
    default=None,
    help="a sparse autoencoder for the Features tab and --steer-feature: a folder or Hugging Face repo "
    "id in SAELens layout (default: the bundled model's own, for the bundled model)",
)
@click.option(
    "--steer-layer",
    type=click.IntRange(min=0),
    default=None,
    help="the block whose input is steered (SteeringLayer) [default: 0, or the SAE's block]",
)
@click.option(
    "--steer-coef",
    type=FiniteFloat(),
    default=None,
    help="SteeringCoefficient: how much of the vector is added [default: 1 with a vector, else 0]",
)
@click.option(
    "--train",
    is_flag=True,
    help="a training book: the loss of predicting each next token of the prompt (inputs: all its tokens "
    "but the last; targets: all but the first), the backward pass, the gradients and one "
    "optimizer step, all as formulas (template: templates/gpt2-train.toml)",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adamw"]),
    default="sgd",
    show_default=True,
    help="with --train: the update the book computes",
)
@click.option(
    "--lr",
    type=FiniteFloat(min=0, max=api.MAX_LEARNING_RATE),
    default=None,
    help="with --train: LearningRate [default: 0.1 for sgd, 0.001 for adamw]",
)
@click.option(
    "--repeat-random",
    type=click.IntRange(min=1),
    default=None,
    help="instead of a prompt: N seeded random token ids, twice (the Heads tab's induction lesson)",
)
@click.option("--seed", type=int, default=0, show_default=True, help="with --repeat-random: the random ids' seed")
@click.option(
    "--corrupted",
    default=None,
    help="activation patching: a second prompt of as many tokens, run beside the clean one (--prompt), with a "
    "patched run that takes one activation from the clean run (the Patching tab)",
)
@click.option("--answer", default=None, help="with --corrupted: the token (one) the clean prompt favours, e.g. ' him'")
@click.option("--foil", default=None, help="with --corrupted: the token (one) the corrupted prompt favours")
@click.option(
    "--calc",
    "calculation",
    type=click.Choice(["auto", "manual"]),
    default=None,
    help="the workbook's calculation mode: auto recalculates on opening and after every edit; manual "
    "waits for F9, so a big book opens at once [default: manual above "
    f"{MANUAL_ABOVE:,} formula cells, else auto]",
)
@click.option(
    "--lens",
    type=click.Choice(["every", "last"]),
    default=None,
    help="where the logit lens reads the residual streams: at every position, or at the prompt's last token "
    "only [default: last when the lens would exceed "
    f"{LENS_EVERY_POSITION_UP_TO:,} cells (layers + 1 x vocabulary x positions: a 124M book), else every]",
)
def build(
    weights,
    tokens,
    prompt,
    out,
    force,
    template,
    prompt_cell,
    positions,
    capacity,
    steer_from,
    steer_to,
    steer_vector,
    steer_feature,
    sae_source,
    steer_layer,
    steer_coef,
    train,
    optimizer,
    lr,
    repeat_random,
    seed,
    corrupted,
    answer,
    foil,
    calculation,
    lens,
):
    """Compile a checkpoint and a prompt into a workbook of formulas.

    With no options: the bundled Shakespeare model and a default prompt, in a Prompt cell that a person
    can change. The --steer-* options fill the Interventions tab's steering cells; --train makes a book that
    trains the model one step; --corrupted makes a book for activation patching (then try xlgpt patch)."""
    bar = tqdm(total=0, unit=" rows", disable=None, file=sys.stderr, leave=False)
    state = {"sheet": None, "done": 0}

    def progress(sheet, rows):  # rows: the sheet's rows written so far
        if sheet is not state["sheet"]:
            state.update(sheet=sheet, done=0)
            bar.reset(total=sheet.extent()[0])
            bar.set_description(sheet.name)
        bar.update(rows - state["done"])
        state["done"] = rows

    steer = api.Steering(steer_from, steer_to, steer_vector, steer_feature, steer_layer, steer_coef)
    ids = parse_tokens(tokens) if tokens is not None else None
    if repeat_random is not None:
        if tokens is not None or prompt is not None:
            raise XlgptError("give --repeat-random, --prompt or --tokens, not two of them")
        ids = api.repeated_random_tokens(weights, repeat_random, seed)
    if (answer is not None or foil is not None) and corrupted is None:
        raise XlgptError("--answer and --foil go with --corrupted")
    patching = api.Patching(corrupted, answer, foil) if corrupted is not None else None
    try:
        built = api.build(
            out,
            weights,
            prompt,
            ids,
            template,
            prompt_cell,
            positions,
            parse_capacity(capacity),
            steer,
            sae_source,
            train,
            optimizer,
            lr,
            calculation,
            progress,
            force,
            patching,
            lens,
        )
    finally:
        bar.close()
    if built.text is not None:
        click.echo(f"prompt: {built.text!r} ({len(built.tokens)} tokens)")
    if built.typed:
        cap = built.capacity
        click.echo(
            f"prompt cell: the workbook tokenizes it itself (up to {built.positions} tokens; {cap.chars} "
            f"characters, {cap.bytes} bytes, {cap.rounds} merge rounds)"
        )
    click.echo(
        f"wrote {out}: {built.tabs} tabs, {built.constants:,} constant cells, {built.formulas:,} formula cells, "
        f"{out.stat().st_size / 1e6:.1f} MB in {built.seconds:.1f} s"
    )
    if built.manual:
        click.echo(
            "calculation: manual (the book opens showing the values xlgpt computed; have the spreadsheet "
            "compute them with Ctrl+Alt+F9 in Excel, Ctrl+Shift+F9 in LibreOffice)"
        )
    if built.lens_at_last:
        click.echo("logit lens: at the prompt's last token only (--lens every: at every position)")


@cli.command("eval")
@click.argument("book", type=click.Path(path_type=Path))
@click.option(
    "--engine",
    type=click.Choice(["auto", "formulas", "libreoffice", "gnumeric", "ironcalc", "both", "all"]),
    default="auto",
    show_default=True,
    help="auto: the fastest engine here that can compute the book (IronCalc up to ~20M cells, LibreOffice beyond: "
    "3x faster at 124M); both: formulas and LibreOffice; all: every engine installed that can compute the book "
    "(formulas, LibreOffice, Gnumeric, IronCalc)",
)
@click.option(
    "--weights",
    "weights",
    default=None,
    help="checkpoint for the reference (default: the one recorded in the workbook)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per engine")
@click.option(
    "--max-cells",
    type=click.IntRange(min=1),
    default=FORMULAS_MAX_CELLS,
    show_default=True,
    help="refuse books with more constant cells than this with the formulas engine",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="seconds LibreOffice or Gnumeric may take",
)
@click.option(
    "--prompt",
    default=None,
    help="type this text into the Prompt cell of a copy of the workbook (built from a prompt) first",
)
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="a file of prompts, one a line: load the workbook once (IronCalc, or LibreOffice for a book of over ~20M "
    "cells) and check each prompt",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME[i,j]=VALUE",
    help="edit an input cell in a copy first (repeatable), e.g. HeadSwitches[1,2]=0, MlpSwitches[0]=0, "
    "SteeringCoefficient=4, Temperature=0.8, AttributionToken=198 (indices from 0); the reference "
    "runs with the same edits",
)
@click.option(
    "--template",
    type=click.Path(path_type=Path),
    default=None,
    help="the template the workbook was built with (default: templates/gpt2.toml); eval recompiles "
    "the book and refuses formulas the compiler does not write",
)
def eval_cmd(book, engine, weights, as_json, max_cells, timeout, prompt, prompts_file, sets, template):
    """Recalculate a workbook with a spreadsheet engine and check it against the NumPy reference.

    Exit status: 0 when every engine matches (same prediction, logits within 1e-6) and the book shows what it
    computes as xlgpt writes it (cached values, formats), 1 on a mismatch or a display difference, 2 on bad
    input."""

    def show_stage(msg):  # like the progress bars: only for a person at a terminal
        if sys.stderr.isatty():
            click.echo(f"· {msg}", err=True)

    try:
        if prompts_file is not None:
            eval_prompts(book, prompts_file, engine, weights, as_json, timeout, prompt, show_stage, template)
        results = api.evaluate(
            book,
            engine,
            weights,
            prompt,
            sets,
            template,
            timeout,
            max_cells,
            show_stage,
            lambda engine, why: click.echo(f"skipping {engine}: {why}", err=True),
        )
    except NotCompiled as e:  # a verdict, not bad input: the book does not compute what it shows
        if as_json:
            click.echo(json.dumps({"match": False, "not_compiled": str(e)}))
        else:
            click.echo(f"MISMATCH: {e}")
        sys.exit(1)
    if not as_json and results and "prompt" in results[0]:
        click.echo(f"prompt: {results[0]['prompt']!r}")
    if not as_json and results and "reference_tokens" in results[0]:
        click.echo(f"tokens (tokenizers library): {','.join(map(str, results[0]['reference_tokens']))}")
    for r in results:
        show_result(r, as_json)
    if results and not as_json and (sets or prompt is not None):  # what the edit changed
        show_readout(results[0])
    sys.exit(verdict_code(results, as_json))


def verdict_code(results, as_json):
    """0 when every engine matches and the book shows its results as xlgpt writes them, else 1; a display
    difference (a number format, a colour, a conditional format: nothing a formula computes from) gets its own
    verdict line, after the engines'."""
    display = next((r["display_difference"] for r in results if r.get("display_difference")), None)
    if display and not as_json:
        click.echo(f"{'display':>11}: DIFFERS — {display}")
    return 0 if all(r["match"] for r in results) and not display else 1


def show_result(r, as_json):
    """One engine's verdict: a line (or a JSON object)."""
    if as_json:
        click.echo(json.dumps(r))
        return
    verdict = "MATCH" if r["match"] else "MISMATCH"
    text = lambda key: f" {r[key]!r}" if key in r else ""
    loss = f"loss {r['loss']:.4f}, " if "loss" in r else ""  # a training book: its Loss first
    click.echo(
        f"{r['engine']:>11}: {loss}next token {r['token_id']}{text('token_text')} "
        f"(reference {r['reference_token_id']}{text('reference_token_text')}), "
        f"max |logit diff| {r['max_abs_logit_diff']:.2e} — {verdict} "
        f"[{r['seconds']} s, {r['peak_rss_mb']} MB]"
    )
    if "reference_tokens" in r and r["tokens"] != r["reference_tokens"]:
        click.echo(f"{'':>11}  the sheet tokenized the prompt as {','.join(map(str, r['tokens'])) or 'nothing'}")
    if "first_difference" in r:  # a mismatch: where the book first leaves the reference
        d = r["first_difference"]
        click.echo(
            f"{'':>11}  first difference: "
            + (describe_difference(d) if d else "none of the model's stages (the difference is after them)")
        )
    if r.get("cached_difference"):  # what the book shows before it is recalculated
        click.echo(f"{'':>11}  cached value: {r['cached_difference']}")


def token_text(t):
    return f"{t['token_id']} {t['text']!r}" if "text" in t else str(t["token_id"])


def show_readout(r):
    """What the book computed at the prompt's last token, below the verdicts: what an edit (--set, --prompt)
    changes."""
    lines = []
    if r.get("top_k"):
        lines.append("top-5: " + ", ".join(f"{token_text(t)} {t['probability']:.1%}" for t in r["top_k"]))
    if "sampled_token" in r:
        sampled = r["sampled_token"]
        lines.append("sampled token: " + (token_text(sampled) if sampled else "none (the cell shows a message)"))
    if r.get("attribution"):
        a = r["attribution"]
        logit = f" (logit {a['logit']:.3f})" if a["logit"] is not None else ""
        terms = ", ".join(f"{t['component']} {t['contribution']:+.3f}" for t in a["largest"])
        lines.append(f"attribution to {token_text(a['target'])}{logit}, largest terms: {terms}")
    if r.get("lens"):
        rows = ", ".join(f"{s['stream']} {token_text(s)} {s['probability']:.1%}" for s in r["lens"])
        lines.append(f"logit lens at position {r['lens_position']}: {rows}")
    if r.get("patching"):
        p = r["patching"]
        lines.append(
            f"LogitDiff: clean {p['clean']:.3f}, corrupted {p['corrupted']:.3f}, patched {p['patched']:.3f}; "
            f"PatchedMetric {p['metric']:.1%}"
        )
    for line in lines:
        click.echo(f"{'':>11}  {line}")


def eval_prompts(book, prompts_file, engine, weights, as_json, timeout, prompt, show_stage, template=None):
    """eval --prompts: every prompt of the file, the book loaded once; exits."""
    if prompt is not None:
        raise XlgptError("give either --prompt or --prompts, not both")
    results = api.evaluate_each_prompt(
        book, api.read_prompts(prompts_file), weights, timeout, show_stage, template, engine
    )
    for r in results:
        if not as_json:
            click.echo(f"prompt: {r['prompt']!r}")
        show_result(r, as_json)
    sys.exit(verdict_code(results, as_json))


@cli.command()
@weights_option
@input_options
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--generate",
    type=click.IntRange(min=1),
    default=None,
    help="instead, continue the prompt greedily (temperature 0) by this many tokens",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def predict(weights, tokens, prompt, top_k, generate, as_json):
    """Predict the next token with the NumPy reference (no spreadsheet involved)."""
    ids = parse_tokens(tokens) if tokens is not None else None
    if generate:
        r = api.continue_greedily(weights, ids, prompt, generate)
        if as_json:
            click.echo(json.dumps({k: r[k] for k in ("tokens", "generated", "text") if k in r}))
        else:
            click.echo(r["full_text"] if "full_text" in r else ",".join(map(str, r["generated"])))
        return
    r = api.predict(weights, ids, prompt, top_k)
    if as_json:
        click.echo(json.dumps({"tokens": r["tokens"], "token_id": r["token_id"], "top": r["top"]}))
        return
    if "prompt" in r:
        click.echo(f"prompt: {r['prompt']!r} ({len(r['tokens'])} tokens)")
    for rank, row in enumerate(r["top"], 1):
        text = f"  {row['text']!r}" if "text" in row else ""
        click.echo(f"{rank}. token {row['token_id']:>6}{text}  logit {row['logit']:9.4f}  p {row['probability']:.4f}")


@cli.command()
@weights_option
@input_options
@click.option(
    "--book",
    "book_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="generate with this token-ids workbook instead of building one (its first positions get the "
    "prompt; default prompt: the ids before the book's trailing pad ids)",
)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="tokens to generate")
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="0: the argmax; above 0 needs a workbook with sampling cells",
)
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="0: every token")
@click.option("--seed", type=int, default=1, show_default=True, help="1 to 2147483646")
@live_engine_option
@click.option(
    "--positions",
    type=click.IntRange(min=1),
    default=None,
    help="positions of the book built (default: the prompt's tokens plus --steps, at most the context)",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="keep the built workbook here, every formula's result cached so that it opens showing its numbers "
    "(LibreOffice then recomputes it on load: slower to start than the temporary book, which caches none)",
)
@click.option(
    "--force",
    is_flag=True,
    help="replace --out even if it is a workbook xlgpt did not write (without it, only xlgpt's own are replaced)",
)
@click.option(
    "--instruments",
    is_flag=True,
    help="build the book with the instruments (templates/gpt2.toml: logit lens, attribution, probabilities, "
    "top-k, features); default: without them (templates/gpt2-generate.toml), which loads faster",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="seconds any one LibreOffice step may take",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def generate(
    weights,
    tokens,
    prompt,
    book_path,
    steps,
    temperature,
    top_k,
    seed,
    engine,
    positions,
    out,
    force,
    instruments,
    timeout,
    as_json,
):
    """Generate text with the workbook itself: recalculate, read the chosen token, check it against the
    NumPy reference, write it into the next position; repeat.

    Exit status: 0 when every step agrees with the reference, 1 naming the first step that does not."""

    def on_built(path, positions, seconds):
        if not as_json:
            click.echo(f"built {path} ({positions} positions) in {seconds:.1f} s", err=True)

    shown = {"tokenizer": None}

    def on_start(ids, tok):
        shown["tokenizer"] = tok
        if not as_json:
            click.echo(tok.decode(ids) if tok else ",".join(map(str, ids)), nl=False)

    def on_token(token, text):
        if not as_json:
            click.echo(text if shown["tokenizer"] else f",{text}", nl=False)

    r = api.generate(
        weights,
        parse_tokens(tokens) if tokens is not None else None,
        prompt,
        book_path,
        steps,
        temperature,
        top_k,
        seed,
        engine,
        positions,
        out,
        instruments,
        timeout,
        on_built,
        on_start,
        on_token,
        force,
    )
    if as_json:
        click.echo(json.dumps(r))
    else:
        click.echo()
        spt = r["seconds_per_token_after_first"] or r["seconds_per_token"]
        summary = f"{len(r['tokens'])} tokens with {r['engine']}, {spt} s per token"
        if r["context_full"] and len(r["tokens"]) < steps:
            summary += f"; the workbook is full ({r['positions']} positions)"
        if r["match"]:
            click.echo(
                f"{summary}; every step agrees with the reference (max |logit diff| {r['max_abs_logit_diff']:.2e})"
            )
        else:
            m = r["mismatch"]
            click.echo(
                f"{summary}; MISMATCH at step {m['step']} (position {m['position']}): the workbook chose "
                f"{m['token_id']}, the reference {m['reference_token_id']}, max |logit diff| "
                f"{m['max_abs_logit_diff']:.2e}",
                err=True,
            )
    sys.exit(0 if r["match"] else 1)


@cli.command()
@weights_option
@click.option(
    "--text",
    "text_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="train on this UTF-8 text: step k reads the --window tokens from (k · window) mod (tokens − "
    "window) and predicts the tokens one further on [default: the bundled model's Shakespeare sample]",
)
@click.option(
    "--prompt",
    default=None,
    help="train on this text instead: every step's window is the prompt itself "
    "(inputs: all its tokens but the last; targets: all but the first)",
)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=16, show_default=True, help="tokens per step (--text)")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adamw"]),
    default="adamw",
    show_default=True,
    help="AdamW as torch.optim.AdamW (betas 0.9, 0.999, eps 1e-8, weight decay 0.01); SGD is w − lr·grad",
)
@click.option(
    "--lr",
    type=FiniteFloat(min=0, max=api.MAX_LEARNING_RATE),
    default=None,
    help="learning rate [default: 0.001 for adamw, 0.01 for sgd]",
)
@live_engine_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default="trained",
    show_default=True,
    help="directory to create: the trained checkpoint and train.xlsx (the loss curve)",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="seconds any one LibreOffice step may take",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with every step's loss")
def train(weights, text_file, prompt, steps, window, optimizer, lr, engine, out, timeout, as_json):
    """Train the model with the spreadsheet: each step, the workbook computes the loss, every gradient and the
    optimizer's update as formulas; xlgpt copies the updated weights over the weights (the copy-paste epoch)
    and checks the step against the NumPy reference's own training loop.

    Exit status: 0 when every step agrees with the reference, 1 naming the first that does not."""

    def on_start(steps, window, optimizer, lr, engine):
        if not as_json:
            click.echo(
                f"{steps} steps of {window} tokens, {optimizer} (lr {lr:g}), {engine} computing every step; "
                f"the reference beside it"
            )

    def on_step(s):
        if not as_json:
            click.echo(
                f"step {s['step']:>3}/{steps}  loss {s['loss']:.4f}  (reference {s['reference_loss']:.4f})"
                f"  {s['seconds']:.2f} s"
            )

    try:
        result = api.train(
            weights, text_file, prompt, steps, window, optimizer, lr, engine, out, timeout, on_start, on_step
        )
    except Diverged as e:
        error_line(e)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(result))
    else:
        done = result["steps"]
        click.echo(
            f"loss {done[0]['loss']:.4f} -> {done[-1]['loss']:.4f}; every step agrees with the reference "
            f"(weights within {result['max_weight_diff']:.1e}); wrote {out}/ (model.safetensors, "
            f"{Path(result['workbook']).name}: its Loss tab charts the loss)"
        )


HEATMAP_TITLES = {
    "resid_pre": "the residual stream entering each block",
    "attn_out": "each attention output",
    "mlp_out": "each MLP output",
    "head": "each head's output (at every position)",
}


@cli.command()
@click.argument("book", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="write a copy of BOOK with the heatmaps in its Patching tab (xlgpt eval checks them there)",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "ironcalc", "libreoffice"]),
    default="auto",
    show_default=True,
    help="the spreadsheet that computes every patch (auto: IronCalc up to ~20M cells, else LibreOffice)",
)
@click.option("--weights", default=None, help="checkpoint for the reference (default: the one recorded in BOOK)")
@click.option("--force", is_flag=True, help="replace --out even if xlgpt did not write it")
@click.option(
    "--timeout", type=click.IntRange(min=1), default=3600, show_default=True, help="seconds a LibreOffice step may take"
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with the heatmaps")
def patch(book, out, engine, weights, force, timeout, as_json):
    """Activation patching with the workbook: in a book built with --corrupted, patch the residual stream, the
    attention output and the MLP output at every layer and position, and every head's output, one at a time
    (the Patching tab's cells), reading PatchedMetric each time: 1 means the patch restores the clean run's logit
    difference, 0 that it changes nothing. Every value is checked against the NumPy reference's patching.

    Exit status: 0 when every patch agrees with the reference, 1 naming the first that does not."""
    bar = tqdm(total=0, unit=" patches", disable=True if as_json else None, file=sys.stderr, leave=False)
    try:
        result = api.patch(book, out, engine, weights, timeout, on_patch=lambda *patch: bar.update(), force=force)
    except Diverged as e:
        error_line(e)
        sys.exit(1)
    finally:
        bar.close()
    if as_json:
        heatmaps = {component: values.tolist() for component, values in result.heatmaps.items()}
        click.echo(json.dumps({"engine": result.engine, "match": True, "heatmaps": heatmaps, "out": out and str(out)}))
        return
    for component, values in result.heatmaps.items():
        columns = [f"head {h}" for h in range(values.shape[1])] if component == "head" else result.columns
        click.echo(f"PatchedMetric, patching {HEATMAP_TITLES[component]}:")
        click.echo(" " * 9 + "".join(f"{c[:9]:>10}" for c in columns))
        for layer, row in enumerate(values):
            click.echo(f"layer {layer:<3}" + "".join(f"{v:10.3f}" for v in row))
    n = sum(v.size for v in result.heatmaps.values())
    click.echo(
        f"{n} patches computed by {result.engine} in {result.seconds:.1f} s; every one agrees with the reference"
        + (f"; wrote {out}" if out is not None else "")
    )


@cli.command()
@click.argument("text", nargs=-1, required=True)
@weights_option
@click.option(
    "--tokenizer",
    "tokenizer_name",
    default=None,
    help="'gpt2' (bundled GPT-2 tokenizer files) or a directory of tokenizer files; "
    "default: the tokenizer of --weights",
)
@click.option(
    "--engine",
    type=click.Choice(["formulas", "libreoffice"]),
    default=None,
    help="tokenize with the spreadsheet itself: build tokenizer workbooks, recalculate them with "
    "this engine and compare with the tokenizers library (exit 1 on a difference)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON list")
def tokenize(text, weights, tokenizer_name, engine, as_json):
    """Print the token ids and token strings of each TEXT."""
    results = api.tokenize(list(text), weights, tokenizer_name, engine)
    if as_json:
        click.echo(json.dumps(results, ensure_ascii=False))
    else:
        for r in results:
            verdict = (
                "" if "match" not in r else (" — MATCH" if r["match"] else f" — MISMATCH, tokenizers: {r['reference']}")
            )
            click.echo(f"{r['text']!r}: {len(r['tokens'])} tokens{verdict}")
            click.echo("  ids:     " + ",".join(map(str, r["tokens"])))
            click.echo("  strings: " + " ".join(repr(x) for x in r["strings"]))
            if r.get("status"):
                click.echo(f"  sheet:   {r['status']}")
    if engine and not all(r["match"] for r in results):
        sys.exit(1)


@cli.command()
@click.option(
    "--sae",
    "sae_source",
    default=None,
    help="SAE folder in SAELens layout (cfg.json + sae_weights.safetensors), or hub repo id "
    "owner/name[/folder]; default: the bundled Shakespeare SAE",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=None,
    help="only the K features that fire most often (default: all, by index)",
)
@click.option(
    "--search", default=None, metavar="WORD", help="only features whose label or top tokens contain WORD (any case)"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def features(sae_source, top, search, as_json):
    """List a sparse autoencoder's labelled features: index, label, top tokens, how often it fires."""
    info = api.features(sae_source, top, search, progress=sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return
    figures, rows = info["figures"], info["features"]
    click.echo(
        f"{info['path']}: {info['d_sae']} features on {info['hook_name']} ({info['d_in']} dimensions)"
        + (
            f"; FVE {figures['fraction_of_variance_explained']:.3f}, mean L0 {figures['mean_l0']:.1f}, "
            f"{figures['dead_features']} dead"
            if figures
            else "; its features.json gives no figures"
            if info["labelled"]
            else "; no features.json, so no labels"
        )
    )
    searched = "the features' labels and top tokens (any case)"
    if search:
        click.echo(
            f"searching {searched} for {search!r}: "
            + (
                f"{len(rows)} of {info['d_sae']} features match"
                if rows
                else f"no feature matches, of {info['d_sae']} (a label names the tokens a feature fires on most: "
                "search for a token)"
            )
        )
    if rows:  # frequency: the share of tokens it fires on; ×count: how many of its strongest activations
        click.echo(f"{'index':>5}  {'fires on':>8}  {'label':<28}  tokens of its strongest activations (× count)")
    for r in rows:
        tokens = " ".join(f"{display(t['token'])}×{t['count']}" for t in r["top_tokens"][:4])
        freq = f"{r['frequency']:8.3%}" if r["frequency"] is not None else " " * 8
        click.echo(f"{r['index']:>5}  {freq}  {r['label']:<28}  {tokens}")
    if not rows and not search:
        click.echo("no features")


class Terminated(BaseException):
    """SIGTERM or SIGHUP: raised in the main thread so every finally-block runs (temporary files removed,
    LibreOffice's process group killed) before a one-line exit."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    if os.getpid() != _MAIN_PID:  # a forked writer worker, before its initializer ran: end quietly
        os._exit(128 + signum)
    raise Terminated(signum)


_MAIN_PID = None


def install_signal_handlers():
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:  # a parent that ignores SIGHUP (nohup) keeps it ignored
            signal.signal(sig, _terminate)


def run(argv=None):
    """The command line, in this process: returns the exit status. Bad input is one `xlgpt: error:` line and
    status 2, whatever raised it (tests call this directly; main() adds the signal handling of a process)."""
    try:
        cli.main(args=argv, prog_name="xlgpt", standalone_mode=False)
        return 0
    except SystemExit as e:  # a command's own verdict (eval's MISMATCH: 1)
        return e.code if isinstance(e.code, int) else 0
    except XlgptError as e:
        error_line(e)
    except click.ClickException as e:  # a usage error: one line too, like every other bad input
        error_line(" ".join(e.format_message().split()) + (" (see --help)" if isinstance(e, click.UsageError) else ""))
        return e.exit_code if isinstance(e, click.UsageError) else 2
    except OSError as e:  # the environment, not a bug: a full disk or TMPDIR, a read-only directory, ...
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        error_line(f"{where}{e.strerror or e}")
    return 2


def main():
    install_signal_handlers()
    try:
        code = run()
    except Terminated as e:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one line, even if a second signal follows
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        interrupted(f"terminated ({signal.Signals(e.signum).name})", 128 + e.signum)
    except (click.exceptions.Abort, KeyboardInterrupt):
        interrupted("interrupted", 130)
    sys.exit(code)
