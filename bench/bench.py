"""make bench: build workbooks of a few GPT-2 shapes and print time, peak memory, size and cells/s.

Each build runs in its own process so its peak memory is its own: the proportional set size of it and its forked
writer workers (the pages they share counted once), sampled. In the same run, openpyxl's
write-only mode writes a slice of the same weight cells, and the ratio of cells per second is printed.

    python bench/bench.py [--sizes small,medium,124M] [--context N] [--verify]
    python bench/bench.py --generate 20    # LibreOffice session: generation speed on the bundled model
    python bench/bench.py --train 5        # training books: the bundled model's, and a 124M one's size
    python bench/bench.py --generate-124m 16   # generation speed with a 124M-shape book (slow: minutes, GBs)
    python bench/bench.py --generate-124m 16 --layers 2   # the same with fewer layers
    python bench/bench.py --engines-at-scale 16   # IronCalc and LibreOffice on the medium and 124M shapes
    python bench/bench.py --lens-124m 16   # a 124M Prompt-cell book, its lens at every position vs the last
    python bench/bench.py --lens-124m 16 --lens last   # only the last (the default at 124M)
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openpyxl

from xlgpt.compile.backward import Training
from xlgpt.compile.build import build, inputs_for
from xlgpt.compile.lower import lower
from xlgpt.compile.template import load_spec
from xlgpt.engines import ironcalc
from xlgpt.engines.session import LibreOfficeSession
from xlgpt.model.checkpoint import load
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book
from xlgpt.tokenizer import hf

ROOT = Path(__file__).resolve().parent.parent
GENERATE_TEMPLATE = ROOT / "templates" / "gpt2-generate.toml"
GPT2_TOKENIZER = ROOT / "weights" / "gpt2-tokenizer"

SIZES = {  # name: layers, embd, heads, vocab, positions, tokens in the book
    "small": (2, 64, 4, 300, 32, 8),
    "medium": (4, 256, 8, 8000, 128, 16),
    "124M": (12, 768, 12, 50257, 1024, 10),
    "124M-ctx32": (12, 768, 12, 50257, 1024, 32),
    "gpt2-medium": (24, 1024, 16, 50257, 1024, 10),
}


def child_build(ckpt, tokens, out):
    """Run inside the child: build, print seconds and cell counts as JSON."""
    t0 = time.perf_counter()
    sheets, _ = build(load(ckpt), tokens, out)
    seconds = time.perf_counter() - t0
    counts = [s.cell_counts() for s in sheets]
    print(
        json.dumps({"seconds": seconds, "constants": sum(c[0] for c in counts), "formulas": sum(c[1] for c in counts)})
    )


def openpyxl_rate(ckpt, n_cells=300_000):
    """Cells per second of openpyxl's write-only mode on real weight rows of the same checkpoint."""
    w = load(ckpt)["wte.weight"]
    rows = w[: max(1, n_cells // w.shape[1])]
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("w")
    t0 = time.perf_counter()
    for r in rows:
        ws.append(r.tolist())
    with tempfile.TemporaryDirectory() as tmp:
        wb.save(Path(tmp) / "w.xlsx")
    return rows.size / (time.perf_counter() - t0)


def generate_json(*args, env=None):
    """`xlgpt generate ... --json`, its result as a dict (exit 1, a mismatch, still gives one). `env`: more
    environment variables, for LibreOffice too."""
    run = subprocess.run(
        [sys.executable, "-m", "xlgpt", "generate", *map(str, args), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if run.returncode not in (0, 1):
        sys.exit(f"generate failed: {run.stderr.strip()[-300:]}")
    return json.loads(run.stdout)


def bench_generate(steps):
    """`xlgpt generate --steps STEPS` on the bundled model: greedy and sampled with the generation book, then
    sampled with the instruments' book (--instruments); seconds per token warm, with the load average."""
    for label, args in (
        ("temperature 0", ()),
        ("temperature 0.8, top-k 40, seed 7", SAMPLED),
        ("temperature 0.8, top-k 40, seed 7, --instruments", SAMPLED + ("--instruments",)),
    ):
        r = generate_json("--steps", steps, *args)
        print(
            f"bundled, {r['positions']} positions, {label}: {r['seconds_per_token_after_first']} s per token warm "
            f"({1 / r['seconds_per_token_after_first']:.0f} tokens/s; reference check "
            f"{r['reference_seconds_per_token']} s), load {r['load_seconds']} s, match {r['match']} "
            f"[load average {os.getloadavg()[0]:.1f}]",
            flush=True,
        )


SAMPLED = ("--temperature", "0.8", "--top-k", "40", "--seed", "7")


def bench_engines(steps=20):
    """Each engine's time to verify the bundled model's books (`xlgpt eval`, provenance and reference included),
    and seconds per generated token with LibreOffice and IronCalc, in one run."""
    engines = ("ironcalc", "libreoffice", "gnumeric", "formulas")
    with tempfile.TemporaryDirectory(prefix="xlgpt-bench-") as tmp:
        for label, args in (("default (Prompt cell)", ()), ("token ids", ("--no-prompt-cell",))):
            book = Path(tmp) / "book.xlsx"
            subprocess.run(
                [sys.executable, "-m", "xlgpt", "build", *args, "--out", book], check=True, capture_output=True
            )
            for engine in engines:
                t0 = time.perf_counter()
                run = subprocess.run(
                    [sys.executable, "-m", "xlgpt", "eval", book, "--engine", engine], capture_output=True, text=True
                )
                seconds = time.perf_counter() - t0
                verdict = "MATCH" if run.returncode == 0 else (run.stderr or run.stdout).strip()[-90:]
                print(f"verify the bundled {label} book with {engine:>11}: {seconds:6.1f} s  {verdict}", flush=True)
    for engine in ("libreoffice", "ironcalc"):
        r = generate_json("--steps", steps, "--engine", engine, *SAMPLED)
        print(
            f"generate with {engine:>11}: {r['seconds_per_token_after_first']} s per token warm "
            f"({1 / r['seconds_per_token_after_first']:.1f} tokens/s), load {r['load_seconds']} s, match {r['match']} "
            f"[load average {os.getloadavg()[0]:.1f}]",
            flush=True,
        )


def random_checkpoint(out, layers, embd, heads, vocab, context):
    """A seeded random checkpoint of that shape in `out` (the speed of a book does not depend on its weights)."""
    subprocess.run(
        [sys.executable, "-m", "xlgpt", "weights", "random", "--layers", str(layers), "--embd", str(embd)]
        + ["--heads", str(heads), "--vocab", str(vocab), "--context", str(context), "--seed", "1", "--out", str(out)],
        check=True,
        capture_output=True,
    )


def child_ironcalc(book):
    """Inside a child: load the book into IronCalc and recompute it, announcing each phase's seconds on stdout
    (the parent may stop it mid-recompute)."""
    t0 = time.perf_counter()
    model = ironcalc.load(book)
    print(json.dumps({"load_seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    t0 = time.perf_counter()
    model.evaluate()
    print(json.dumps({"evaluate_seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def ironcalc_at_scale(book, limit):
    """IronCalc's load and full recompute of `book` in a child process, stopped after `limit` seconds: the phases'
    seconds (None where it did not finish) and the child's peak resident memory in GB."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--ironcalc-child", str(book)], stdout=subprocess.PIPE, text=True
    )
    phases, hwm_kb, deadline = {}, 0, time.monotonic() + limit
    os.set_blocking(child.stdout.fileno(), False)
    while child.poll() is None and time.monotonic() < deadline:
        for line in child.stdout:
            phases.update(json.loads(line))
        with open(f"/proc/{child.pid}/status") as status:
            hwm_kb = max([hwm_kb] + [int(ln.split()[1]) for ln in status if ln.startswith("VmHWM:")])
        time.sleep(1)  # a sampling interval for the memory figure, not a wait for a phase
    if child.poll() is None:
        child.kill()
    child.wait()
    for line in child.stdout:
        phases.update(json.loads(line))
    return phases.get("load_seconds"), phases.get("evaluate_seconds"), hwm_kb / 2**20


def bench_engines_at_scale(positions, limit=1200):
    """IronCalc against LibreOffice, in one run, on books of growing size (token ids, `positions` positions): the
    medium shape with every instrument and the 124M shape's generation book (no lens). LibreOffice: `xlgpt eval`
    (load, recompute, every table against the reference); IronCalc: load and one full recompute in a child, stopped
    after `limit` seconds (`xlgpt eval --engine ironcalc` verifies the values too, in ~19 min at 124M)."""
    shapes = (("medium", SIZES["medium"][:5], ()), ("124M", SIZES["124M"][:5], ("--template", GENERATE_TEMPLATE)))
    with tempfile.TemporaryDirectory(prefix="xlgpt-bench-") as tmp:
        for name, shape, template in shapes:
            ckpt, book = Path(tmp) / name, Path(tmp) / f"{name}.xlsx"
            random_checkpoint(ckpt, *shape)
            tokens = ",".join(str((i * 7919) % shape[3]) for i in range(positions))
            subprocess.run(
                [sys.executable, "-m", "xlgpt", "build", "--weights", ckpt, "--tokens", tokens, *template]
                + ["--out", book],
                check=True,
                capture_output=True,
            )
            print(
                f"{name} shape, {positions} positions: {cells_of(book)}, {book.stat().st_size / 1e6:.0f} MB", flush=True
            )
            t0 = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "xlgpt", "eval", book, "--weights", ckpt, *template, "--engine", "libreoffice"]
                + ["--json"],
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - t0
            verdict = "MATCH" if run.returncode == 0 else (run.stderr or run.stdout).strip()[-90:]
            peak = json.loads(run.stdout)["peak_rss_mb"] / 1024 if run.returncode == 0 else 0
            print(f"  LibreOffice: xlgpt eval {seconds:.0f} s ({verdict}), soffice peak {peak:.1f} GB", flush=True)
            load, evaluate, peak = ironcalc_at_scale(book, limit)
            done = f"recompute {evaluate:.0f} s" if evaluate is not None else f"recompute not done after {limit} s"
            loaded = f"load {load:.0f} s" if load is not None else f"load not done after {limit} s"
            print(
                f"  IronCalc: {loaded}, {done}, peak {peak:.1f} GB [load average {os.getloadavg()[0]:.1f}]", flush=True
            )


def tree_pss(pid):
    """The proportional set size (bytes) of a process and its descendants: pages they share (the writer's forked
    workers read the parent's weights) counted once, split among them."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):  # it ended meanwhile
            pass
    return total


def timed(args, stdout=subprocess.DEVNULL):
    """Run a command: (seconds, the peak of its processes' proportional set size in GB, sampled every 0.1 s, what
    it printed)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_pss(child.pid))
        time.sleep(0.1)
    out, err = child.communicate()
    if child.returncode:
        sys.exit(f"{' '.join(map(str, args[1:4]))} failed: {err.strip()[-300:]}")
    return time.perf_counter() - t0, peak / 2**30, out


def bench_lens_124m(positions, layers=12, lenses=("every", "last")):
    """The logit lens at every position against the last position only (`build --lens`), in one run, on a 124M-shape
    Prompt-cell book of `positions` positions (random weights, GPT-2's tokenizer): build time, peak memory, size
    and cells; LibreOffice's load, and its full recalculation after a learner types another prompt, a short one
    and then one filling every position (a book computes its products at the prompt's positions only)."""
    prompt, short = "The quick brown fox jumps over the lazy dog", "Mike is quick. He moves"
    gpt2 = hf.load("gpt2")
    long = gpt2.decode(gpt2.encode(" ".join([short] * positions))[:positions])
    with tempfile.TemporaryDirectory(prefix="xlgpt-bench-") as tmp:
        ckpt = Path(tmp) / "124M"
        random_checkpoint(ckpt, layers, *SIZES["124M"][1:5])
        for file in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(GPT2_TOKENIZER / file, ckpt / file)
        for lens in lenses:
            book = Path(tmp) / f"{lens}.xlsx"
            build = [sys.executable, "-m", "xlgpt", "build", "--weights", ckpt, "--prompt", prompt]
            seconds, peak, _ = timed(build + ["--positions", str(positions), "--lens", lens, "--out", book])
            print(
                f"124M shape{'' if layers == 12 else f' with {layers} layers'}, Prompt cell, {positions} positions, "
                f"lens at {lens} position: {cells_of(book)}, {book.stat().st_size / 1e6:.0f} MB, build {seconds:.0f} s "
                f"at {peak:.1f} GiB [load average {os.getloadavg()[0]:.1f}]",
                flush=True,
            )
            with LibreOfficeSession() as session:
                doc = session.open(book, editable=True)
                print(f"  LibreOffice: load {doc.load_seconds:.0f} s", flush=True)
                for typed in (short, long):
                    doc.set(C.PROMPT, typed)
                    print(
                        f"  a typed prompt of {len(gpt2.encode(typed))} tokens, full recalculation "
                        f"{doc.calculate(all=True):.0f} s, peak {session.peak_rss_mb() / 1024:.1f} GB "
                        f"[load average {os.getloadavg()[0]:.1f}]",
                        flush=True,
                    )


def bench_generate_124m(positions, steps=4, layers=12):
    """`xlgpt generate` on a random 124M-shape checkpoint (the speed does not depend on the weights; `layers`
    fewer than 12 for a smaller book), with a prompt filling all but the last `steps` of `positions` positions:
    build, LibreOffice load, the first step, seconds per token warm at the end of the context (only the new
    column computed) and LibreOffice's peak memory. The book generate builds for itself (no cached results:
    loaded uncomputed, the first step computes the prompt's columns), with LibreOffice's 2 threads then 1; then
    a kept one (`--out`: every result cached, so recomputed on load)."""
    prompt = ",".join(str((i * 7919) % 50257) for i in range(positions - steps))
    shape = f"124M shape{'' if layers == 12 else f' with {layers} layers'}, {positions} positions"
    with tempfile.TemporaryDirectory(prefix="xlgpt-bench-") as tmp:
        ckpt, book = Path(tmp) / "124M", Path(tmp) / "gen.xlsx"
        random_checkpoint(ckpt, layers, *SIZES["124M"][1:5])
        runs = [(f"generate's own book, {t} thread{'s' * (t > 1)}", (), t) for t in (2, 1)]
        runs.append(("a kept book (--out), 2 threads", ("--out", book), 2))
        for label, keep, threads in runs:
            t0 = time.perf_counter()
            # LibreOffice's threads (MAX_CONCURRENCY) compute formula groups; an array formula, as each of the
            # generation book's products is, is computed on one thread whatever their number
            r = generate_json(
                *("--weights", ckpt, "--tokens", prompt, "--steps", steps, *keep, *SAMPLED),
                env={"MAX_CONCURRENCY": str(threads)},
            )
            size = f" ({book.stat().st_size / 1e6:.0f} MB)" if keep else ""
            print(
                f"{shape}, {label}: build {r['build_seconds']:.0f} s{size}, "
                f"LibreOffice load {r['load_seconds']:.0f} s, first token {r['first_token_seconds']:.0f} s, "
                f"then {r['seconds_per_token_after_first']} s per token warm (reference check "
                f"{r['reference_seconds_per_token']} s), peak {r['peak_rss_mb'] / 1024:.1f} GB, match {r['match']}, "
                f"{time.perf_counter() - t0:.0f} s in all [load average {os.getloadavg()[0]:.1f}]",
                flush=True,
            )


def bench_train(steps, window=16):
    """The bundled model's training books (SGD, AdamW): cells, build, LibreOffice eval and seconds per step of
    `xlgpt train`; then the cells a 124M-shape training book would take (lowered, not written)."""
    with tempfile.TemporaryDirectory(prefix="xlgpt-bench-") as tmp:
        prompt = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate"
        for optimizer in ("sgd", "adamw"):
            book = Path(tmp) / f"{optimizer}.xlsx"
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "xlgpt",
                    "build",
                    "--train",
                    "--optimizer",
                    optimizer,
                    "--prompt",
                    prompt,
                    "--out",
                    str(book),
                ],
                check=True,
                capture_output=True,
            )
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            ok = (
                subprocess.run(
                    [sys.executable, "-m", "xlgpt", "eval", str(book), "--engine", "libreoffice"], capture_output=True
                ).returncode
                == 0
            )
            verify = time.perf_counter() - t0
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "xlgpt",
                    "train",
                    "--optimizer",
                    optimizer,
                    "--steps",
                    str(steps),
                    "--window",
                    str(window),
                    "--out",
                    str(Path(tmp) / f"run-{optimizer}"),
                    "--json",
                ],
                capture_output=True,
                text=True,
            )
            r = json.loads(run.stdout)
            per_step = sorted(s["seconds"] for s in r["steps"])[len(r["steps"]) // 2]
            print(
                f"bundled, {optimizer}: {cells_of(book)}, {book.stat().st_size / 1e6:.1f} MB, build {build:.1f} s, "
                f"LibreOffice eval {verify:.1f} s ({'MATCH' if ok else 'FAIL'}); xlgpt train: {per_step:.2f} s per "
                f"step (median of {steps}, window {window}), loss {r['steps'][0]['loss']:.3f} -> "
                f"{r['steps'][-1]['loss']:.3f}"
            )
        ckpt = Path(tmp) / "124M"
        random_checkpoint(ckpt, *SIZES["124M"][:5])
        for optimizer in ("sgd", "adamw"):
            run = subprocess.run(
                [sys.executable, __file__, "--lower", str(ckpt), optimizer, "10"],
                check=True,
                capture_output=True,
                text=True,
            )
            print(f"124M shape, {optimizer}, window 10 (lowered, not written): {run.stdout.strip()}")


def cells_of(book):
    """A book's cells, as printed: every cell, then its formulas and the cells their arrays fill."""
    c = read_book(book).cell_counts
    return f"{c.constants + c.array_cells:,} cells ({c.formulas:,} formulas filling {c.array_cells:,})"


def child_lower(ckpt, optimizer, window):
    """Inside a child: lower a training book (no file) and print its cell counts and an estimated size."""
    t0 = time.perf_counter()
    ckpt = load(ckpt)
    tokens = [(i * 7919) % ckpt.config.vocab_size for i in range(window + 1)]
    spec = load_spec(ckpt.config, training=True)
    book, _ = lower(
        spec,
        ckpt,
        inputs_for(ckpt, tokens[:-1]),
        C.About("124M", "", "token ids", None, None),
        training=Training(tokens[1:], optimizer),
    )
    counts = [s.cell_counts() for s in book.sheets()]
    constants, formulas = sum(c[0] for c in counts), sum(c[1] for c in counts)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # ~9.9 bytes per constant cell in the file (measured); an array formula's cells are written once, empty
    print(
        f"{constants + formulas:,} cells ({constants / 1e6:.0f}M constants, {formulas / 1e6:.0f}M computed), "
        f"about {constants * 9.9 / 2**30:.1f} GiB of .xlsx; lowered in {time.perf_counter() - t0:.0f} s, "
        f"peak {peak / 1024:.1f} GB"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,medium", help=f"comma-separated, from {', '.join(SIZES)}")
    ap.add_argument("--verify", action="store_true", help="also verify each book with LibreOffice")
    ap.add_argument("--generate", type=int, metavar="STEPS", help="instead, time generation in a LibreOffice session")
    ap.add_argument("--engines", action="store_true", help="instead, time each engine on the bundled model's books")
    ap.add_argument("--train", type=int, metavar="STEPS", help="instead, time training books and xlgpt train")
    ap.add_argument(
        "--generate-124m",
        type=int,
        metavar="POSITIONS",
        help="instead, time generation with a 124M-shape book of POSITIONS positions",
    )
    ap.add_argument("--layers", type=int, default=12, help="with --generate-124m: layers of the 124M shape")
    ap.add_argument(
        "--engines-at-scale",
        type=int,
        metavar="POSITIONS",
        help="instead, time IronCalc and LibreOffice on medium and 124M-shape books of POSITIONS positions",
    )
    ap.add_argument(
        "--lens-124m",
        type=int,
        metavar="POSITIONS",
        help="instead, compare a 124M-shape Prompt-cell book's lens at every position and at the last only",
    )
    ap.add_argument("--lens", default="every,last", help="with --lens-124m: the lens placements to compare")
    ap.add_argument("--ironcalc-child", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--lower", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        return bench_generate(args.generate)
    if args.engines:
        return bench_engines()
    if args.train:
        return bench_train(args.train)
    if args.generate_124m:
        return bench_generate_124m(args.generate_124m, layers=args.layers)
    if args.engines_at_scale:
        return bench_engines_at_scale(args.engines_at_scale)
    if args.lens_124m:
        return bench_lens_124m(args.lens_124m, layers=args.layers, lenses=args.lens.split(","))
    if args.ironcalc_child:
        return child_ironcalc(args.ironcalc_child)
    if args.lower:
        return child_lower(args.lower[0], args.lower[1], int(args.lower[2]))
    if args.child:
        return child_build(args.child[0], [int(t) for t in args.child[1].split(",")], args.child[2])

    print(
        f"{'model':>12} {'cells':>12} {'formulas':>9} {'build s':>8} {'peak MB':>8} {'MB':>8} "
        f"{'const/s':>10} {'vs openpyxl':>11} {'verify s':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="xlgpt-bench-") as tmp:
        for name in args.sizes.split(","):
            layers, embd, heads, vocab, ctx, n_tok = SIZES[name]
            ckpt, book = Path(tmp) / name, Path(tmp) / f"{name}.xlsx"
            random_checkpoint(ckpt, layers, embd, heads, vocab, ctx)
            tokens = ",".join(str((i * 7919) % vocab) for i in range(n_tok))
            _, peak, out = timed([sys.executable, __file__, "--child", str(ckpt), tokens, str(book)], subprocess.PIPE)
            r = json.loads(out)
            cells = r["constants"] + r["formulas"]
            rate = r["constants"] / r["seconds"]  # written cells; array formulas fill theirs at recalculation
            ratio = rate / openpyxl_rate(ckpt)
            verify = ""
            if args.verify:
                t0 = time.perf_counter()
                v = subprocess.run(
                    [sys.executable, "-m", "xlgpt", "eval", str(book), "--engine", "libreoffice"],
                    capture_output=True,
                    text=True,
                )
                verify = f"{time.perf_counter() - t0:.1f}" + ("" if v.returncode == 0 else " FAIL")
                if v.returncode:
                    print(f"  verify failed: {(v.stderr or v.stdout).strip()[-300:]}", file=sys.stderr)
            print(
                f"{name:>12} {cells:>12,} {r['formulas']:>9,} {r['seconds']:>8.1f} {peak * 1024:>8.0f} "
                f"{book.stat().st_size / 1e6:>8.1f} {rate:>10,.0f} {ratio:>10.1f}x {verify:>8}",
                flush=True,
            )
            book.unlink()


if __name__ == "__main__":
    main()
