"""Layouts of one GPT-2 124M block's products, timed in LibreOffice (threads off / 1 / 2) and IronCalc (issue #26).

The products of one block at context T (default 16), random weights scaled by 1/sqrt(fan-in), chained as in the
model: qkv = Wqkvᵀ·x + b (768 -> 2304), attn proj of qkv's v rows (768 -> 768), fc = Wfcᵀ·x + b (768 -> 3072),
mlp proj of fc (3072 -> 768): 113.2M multiply-adds at T = 16. Every layout computes the same numbers; each is
written with xlgpt's own writer and checked against NumPy after LibreOffice computes it.

    today      what xlgpt writes: per position column, {=MMULT(W_T, x_t)+b} where the weight is stored transposed
               (c_attn, c_fc), {=TRANSPOSE(MMULT(TRANSPOSE(x_t), W))+b} where it is stored as is (both c_proj)
    today-T    the same with every weight stored transposed: {=MMULT(W_T, x_t)+b} everywhere
    sp-row     =SUMPRODUCT(W_T row i, x_t as a row)+b_i per output cell, in tall columns (formula groups), reading
               a transposed copy of each position's input (one plain reference formula per cell)
    sp-col     =SUMPRODUCT(INDEX(W,1,$B+1):INDEX(W,768,$B+1), x_t)+b_i per output cell, in tall columns (formula
               groups): the weight stored as the checkpoint holds it ([in, out]), so both ranges are columns (column
               B: the feature index). Computes in LibreOffice, Gnumeric, `formulas` and Excel; IronCalc: #VALUE!
    sp-col0    the same with INDEX(W,0,$B+1) for the column: LibreOffice, IronCalc and Excel; Gnumeric #REF!,
               `formulas` wrong
    mmultcell  =MMULT(W_T row i, x_t)+b_i per output cell (a plain formula, 1x1 result), in tall columns
    block      one {=MMULT(W_T, X)+b} per product over all positions (a new token recomputes every column)

LibreOffice 7.4 computes a formula group (>= 100 rows of one relative formula, no array formula, no function on
its deny list) in its thread pool, min(CPUs, MAX_CONCURRENCY) threads; array formulas ({=MMULT()}) on the thread
that recalculates. Beside each time: CPU seconds soffice spent per wall second (2 = both cores busy) and the share
of that CPU time spent in its "thread-pool" threads (formula groups computed there).

    python bench/layouts.py                       # write the books, time them: LibreOffice configs, IronCalc
    python bench/layouts.py --layouts today,sp-col --configs off,1,2 --ironcalc none --repeat 3
    python bench/layouts.py --keep                # keep the books (in --dir) for a look
    python bench/layouts.py --lens 8192 --configs 1,2   # the logit lens: logits as cells, or none
    python bench/layouts.py --lens 50257 --positions 4 --layouts lens-today,lens-T --configs 2   # the unembedding

Times: `load` is the import with recalculation on load off (OOXMLRecalcMode 1); `calcAll` a hard recalculation
(calculateAll(), best of --repeat); `edit all` new inputs at every position then calculate() (a new prompt);
`edit one` new inputs at the last position then calculate() (a new token).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

D = int(os.environ.get("LAYOUTS_EMBD", "768"))  # a smaller model for a quick check of the script itself
FF = 4 * D
PRODUCTS = (  # name, fan-in, fan-out, input ("x", or the output of an earlier product: rows [start, stop))
    ("qkv", D, 3 * D, ("x", 0, D)),
    ("attn_proj", D, D, ("qkv", 2 * D, 3 * D)),
    ("fc", D, FF, ("x", 0, D)),
    ("mlp_proj", FF, D, ("fc", 0, FF)),
)
LAYOUTS = ("today", "today-T", "as-is", "sp-row", "sp-col", "sp-col0", "mmultcell", "block")
CONFIGS = {  # name: (threaded formula groups on, environment of soffice, what LibreOffice then uses)
    "off": (False, {}, "threaded calculation off"),
    "1": (True, {"MAX_CONCURRENCY": "1"}, "threaded, 1 thread"),
    "2": (True, {"MAX_CONCURRENCY": "2"}, "threaded, 2 threads (the default here)"),
}
OUTPUTS = ("OUT_QKV", "OUT_ATTN_PROJ", "OUT_FC", "OUT_MLP_PROJ")
FIRST = 3  # data from column C, as in xlgpt


# --- the books ----------------------------------------------------------------------------------------------
def model(T, seed):
    """Random weights {name: (W [in, out] float32, b [out] float32)}, the input x [768, T], and the float64
    reference of every product computed from the decimals the book holds."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((D, T)).astype(np.float32)
    weights = {
        name: (
            (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32),
            (0.1 * rng.standard_normal(fan_out)).astype(np.float32),
        )
        for name, fan_in, fan_out, _ in PRODUCTS
    }

    def as_read(a):  # what a spreadsheet reads: the shortest float32 decimal, parsed as a double
        return a.astype(str).astype(np.float64)

    out = {"x": as_read(x)}
    for name, _, _, (src, start, stop) in PRODUCTS:
        w, b = weights[name]
        out[name] = as_read(w).T @ out[src][start:stop] + as_read(b)[:, None]
    return weights, x, out


def build(layout, weights, x, path):
    """Write one layout's book: sheet Block (the input X_IN and the products' outputs, rows = features, columns
    = positions), sheet Weights, and for `sp-row` sheet XT (each position's inputs as a row). Returns the
    number of formula cells."""
    import numpy as np

    from xlgpt.sheet.cells import ArrayFormula, Cells, Formula, Numbers, Sheet, cell_name, column_letter
    from xlgpt.sheet.layout import Named, Rect
    from xlgpt.sheet.writer import write_workbook

    T = x.shape[1]
    block, wsheet, xt = Sheet("Block"), Sheet("Weights"), Sheet("XT")
    block.add(Cells(1, 1, [[f"layout {layout}: rows are features, columns positions"]]))
    names, formulas = {}, 0
    X = Rect("Block", 3, FIRST, D, T)
    block.add(Numbers(X.top, X.left, x))
    names["X_IN"] = X
    outs, row = {"x": X}, X.bottom + 2
    for name, _, fan_out, _ in PRODUCTS:
        outs[name] = Rect("Block", row, FIRST, fan_out, T)
        names[f"OUT_{name.upper()}"] = outs[name]
        row += fan_out + 1

    # weights: stored transposed (a row per output feature) or as the checkpoint holds them ([in, out])
    bias_col, wrow, stored = FIRST + FF + 1, 2, {}
    for name, fan_in, fan_out, _ in PRODUCTS:
        w, b = weights[name]
        # today: xlgpt keeps the shorter side across; sp-col: a column per output feature
        transposed = fan_in < fan_out if layout == "today" else layout not in ("sp-col", "sp-col0", "as-is")
        values = w.T if transposed else w
        rect = Named("Weights", wrow, FIRST, *values.shape, f"W_{name}{'_T' if transposed else ''}")
        bias = Named("Weights", wrow, bias_col, fan_out, 1, f"B_{name}")
        wsheet.add(Numbers(rect.top, rect.left, np.ascontiguousarray(values)))
        wsheet.add(Numbers(bias.top, bias.left, b.reshape(-1, 1)))
        for named in (rect, bias):  # the name's cells, as a plain Rect (a Named renders as its name)
            names[named.name] = Rect(named.sheet, named.top, named.left, named.height, named.width)
        stored[name] = (rect, bias, transposed)
        wrow += max(values.shape[0], fan_out) + 1

    def inputs(src, start, stop):
        return outs[src].rows(start, stop)

    xt_rows, xt_next = {}, 1  # sp-row: each input block transposed, a row per position
    for name, fan_in, fan_out, (src, start, stop) in PRODUCTS:
        w, b, transposed = stored[name]
        src_rect, out = inputs(src, start, stop), outs[name]
        if layout in ("today", "today-T", "as-is"):
            for t in range(T):
                xin = src_rect.col(t).ref("Block")
                text = f"MMULT({w.name},{xin})+{b.name}"
                if not transposed:
                    text = f"TRANSPOSE(MMULT(TRANSPOSE({xin}),{w.name}))+{b.name}"
                block.add(ArrayFormula(out.col(t), text))
        elif layout == "block":
            block.add(ArrayFormula(out, f"MMULT({w.name},{src_rect.ref('Block')})+{b.name}"))
        elif layout == "mmultcell":
            last = column_letter(w.right)
            rows = []
            for i in range(fan_out):
                r = w.top + i
                wrow_ref = f"Weights!${column_letter(w.left)}{r}:${last}{r}"
                bias_ref = f"Weights!${column_letter(bias_col)}{r}"
                cols = [column_letter(src_rect.left + t) for t in range(T)]
                rows.append(
                    [Formula(f"MMULT({wrow_ref},{c}${src_rect.top}:{c}${src_rect.bottom})+{bias_ref}") for c in cols]
                )
            block.add(Cells(out.top, out.left, rows))
        elif layout in ("sp-col", "sp-col0"):
            block.add(Cells(out.top, 2, [[j] for j in range(fan_out)]))  # column B: each row's feature index
            rows = []
            for j in range(fan_out):
                n = f"$B{out.top + j}+1"
                wcol = f"INDEX({w.name},1,{n}):INDEX({w.name},{fan_in},{n})"
                if layout == "sp-col0":
                    wcol = f"INDEX({w.name},0,{n})"
                bias_ref = f"Weights!${column_letter(bias_col)}{b.top + j}"
                cols = [column_letter(src_rect.left + t) for t in range(T)]
                rows.append(
                    [Formula(f"SUMPRODUCT({wcol},{c}${src_rect.top}:{c}${src_rect.bottom})+{bias_ref}") for c in cols]
                )
            block.add(Cells(out.top, out.left, rows))
        elif layout == "sp-row":
            key = (src, start, stop)
            if key not in xt_rows:  # position t's inputs as row xt_next + t of sheet XT
                xt_rows[key] = xt_next
                xt.add(
                    Cells(
                        xt_next,
                        FIRST,
                        [
                            [Formula(f"Block!{cell_name(src_rect.top + k, src_rect.left + t)}") for k in range(fan_in)]
                            for t in range(T)
                        ],
                    )
                )
                formulas += T * fan_in
                xt_next += T + 1
            top, last = xt_rows[key], column_letter(FIRST + fan_in - 1)
            rows = []
            for i in range(fan_out):
                r = w.top + i
                wrow_ref = f"Weights!${column_letter(w.left)}{r}:${last}{r}"
                rows.append(
                    [
                        Formula(
                            f"SUMPRODUCT({wrow_ref},XT!$C${top + t}:${last}${top + t})"
                            f"+Weights!${column_letter(bias_col)}{r}"
                        )
                        for t in range(T)
                    ]
                )
            block.add(Cells(out.top, out.left, rows))
        else:
            raise SystemExit(f"unknown layout {layout}")
        formulas += fan_out * T
    sheets = [block, xt, wsheet] if xt.blocks else [block, wsheet]
    write_workbook(path, sheets, names, calculation="auto")
    return formulas


# --- the logit lens of one residual stream: materialized logits, or three array formulas per position ----------
LENS_LAYOUTS = ("lens-today", "lens-T", "lens-cells")
CHUNK = 12_565  # lens-T: the table's columns per chunk (a sheet has 16,384 columns; 50,257 = 4 chunks)


def lens_model(T, vocab, seed):
    """A random token table wte [vocab, 768], a normalized stream x [768, T]; the reference top token and its
    probability at each position (and after the driver's edits of x)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    wte = (0.1 * rng.standard_normal((vocab, D))).astype(np.float32)
    x = rng.standard_normal((D, T)).astype(np.float32)
    w = wte.astype(str).astype(float)

    def top(xs):
        logits = w @ xs
        mx = logits.max(axis=0)
        return np.argmax(logits, axis=0)[None, :].astype(float), (1 / np.exp(logits - mx).sum(axis=0))[None, :]

    xr = x.astype(str).astype(float)
    x2 = xr * 0.5 + 0.25
    x2[:, -1] = xr[:, -1] * 2.0 - 0.5
    return wte, x, top(xr), top(x2)


def build_lens(layout, wte, x, path):
    """lens-today: as xlgpt's lens op: each position's logits {=MMULT(WTE, x_t)} (vocab cells), the column's MAX,
    {=SUM(EXP(logits - max))}, MATCH of the max, 1/sum. lens-T: the same with the table stored transposed, in
    chunks of CHUNK columns, each position's logits {=TRANSPOSE(MMULT(TRANSPOSE(x_t), WTE_Tc))} per chunk (the
    long side of the table walked down its columns, as LibreOffice stores them). lens-cells: no logits cells,
    three array formulas per position, each computing the product again: {=MAX(MMULT(WTE,x_t))},
    {=MATCH(max,MMULT(WTE,x_t),0)-1}, {=1/SUM(EXP(MMULT(WTE,x_t)-max))}. Names LENS_TOP, LENS_P
    (1 x T). Returns the formula cells."""
    import numpy as np

    from xlgpt.sheet.cells import ArrayFormula, Cells, Formula, Numbers, Sheet
    from xlgpt.sheet.layout import Rect
    from xlgpt.sheet.writer import write_workbook

    vocab, T = wte.shape[0], x.shape[1]
    names = {}
    block, wsheet = Sheet("Block"), Sheet("Weights")
    X = Rect("Block", 3, FIRST, D, T)
    block.add(Numbers(X.top, X.left, x))
    chunks = []  # lens-T: (first token, defined name) of each chunk of the transposed table
    if layout == "lens-T":  # the table transposed, [768, vocab], in chunks of CHUNK columns one under the other
        for c, start in enumerate(range(0, vocab, CHUNK)):
            chunk = np.ascontiguousarray(wte[start : start + CHUNK].T)
            wsheet.add(Numbers(2 + c * D, FIRST, chunk))
            names[f"WTE_T{c}"] = Rect("Weights", 2 + c * D, FIRST, D, chunk.shape[1])
            chunks.append((start, f"WTE_T{c}"))
    else:
        names["WTE"] = Rect("Weights", 2, FIRST, vocab, D)
        wsheet.add(Numbers(2, FIRST, wte))
    stats = Rect("Block", X.bottom + 2, FIRST, 4, T)  # max, sum of exp, top token, probability
    names.update({"X_IN": X, "LENS_TOP": stats.row(2), "LENS_P": stats.row(3)})
    mx = stats.row(0)
    if layout in ("lens-today", "lens-T"):
        logits = Rect("Block", stats.bottom + 2, FIRST, vocab, T)
        for t in range(T):
            xt = X.col(t).ref("Block")
            if layout == "lens-today":
                block.add(ArrayFormula(logits.col(t), f"MMULT(WTE,{xt})"))
                continue
            for start, name in chunks:
                rows = logits.col(t).rows(start, start + names[name].width)
                block.add(ArrayFormula(rows, f"TRANSPOSE(MMULT(TRANSPOSE({xt}),{name}))"))
        col = [logits.col(t).ref("Block") for t in range(T)]
        block.add(Cells(mx.top, mx.left, [[Formula(f"MAX({c})") for c in col]]))
        for t in range(T):
            block.add(ArrayFormula(stats.cell(1, t), f"SUM(EXP({col[t]}-{mx.cell(0, t).ref('Block')}))"))
        block.add(
            Cells(
                stats.top + 2,
                FIRST,
                [
                    [Formula(f"MATCH({mx.cell(0, t).ref('Block')},{col[t]},0)-1") for t in range(T)],
                    [Formula(f"1/{stats.cell(1, t).ref('Block')}") for t in range(T)],
                ],
            )
        )
        formulas = vocab * T + 4 * T
    elif layout == "lens-cells":
        for t in range(T):
            product, m = f"MMULT(WTE,{X.col(t).ref('Block')})", mx.cell(0, t).ref("Block")
            block.add(ArrayFormula(stats.cell(0, t), f"MAX({product})"))
            block.add(ArrayFormula(stats.cell(2, t), f"MATCH({m},{product},0)-1"))
            block.add(ArrayFormula(stats.cell(3, t), f"1/SUM(EXP({product}-{m}))"))
        formulas = 3 * T
    else:
        raise SystemExit(f"unknown lens layout {layout}")
    write_workbook(path, [block, wsheet], names, calculation="auto")
    return formulas


def lens_bench(args, configs, scratch):
    import numpy as np

    T = args.positions
    wte, x, (top, p), (top2, _) = lens_model(T, args.lens, seed=26)
    macs = args.lens * D * T
    print(f"a logit lens over a vocabulary of {args.lens} at context {T}: {macs / 1e6:.1f}M multiply-adds per pass")
    books, info = {}, {}
    layouts = [k for k in args.layouts.split(",") if k in LENS_LAYOUTS] or LENS_LAYOUTS
    for layout in layouts:
        path = scratch / f"{layout}.xlsx"
        formulas = build_lens(layout, wte, x, path)
        books[layout], info[layout] = path, (formulas, path.stat().st_size / 1e6)
        print(f"  wrote {path}: {formulas:,} formula cells, {info[layout][1]:.1f} MB")
    print(
        "| lens layout | formula cells | MB | LibreOffice config | load s | calcAll s | M mult-add/s (1 pass) "
        "| edit all s | edit one s | top tokens right | max rel err of p |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for config in configs:
        files = [books[k] for k in layouts]
        for r in run_libreoffice(config, files, args.repeat, scratch, args.timeout, ("LENS_TOP", "LENS_P"), "LENS_TOP"):
            layout = Path(r["file"]).stem
            if "error" in r:
                print(f"  {layout}: {r['error']}", flush=True)
                continue
            got_top = np.array(r["values"]["LENS_TOP"], float)
            right = int((got_top == top).sum()) + int((np.array(r["after_edits"], float) == top2).sum())
            err = max_rel_error(r["values"]["LENS_P"], p)
            print(
                f"| {layout} | {info[layout][0]:,} | {info[layout][1]:.0f} | {CONFIGS[config][2]} | {r['load']:.1f} "
                f"| {r['calc_all']:.2f} | {macs / r['calc_all'] / 1e6:.0f} | {r['edit_all']:.2f} | {r['edit_one']:.2f} "
                f"| {right}/{2 * T} | {err:.0e} |",
                flush=True,
            )
    if not args.keep:
        for path in books.values():
            path.unlink(missing_ok=True)


# --- LibreOffice: a private soffice per configuration, driven by this file under the system Python ------------
def start_soffice(profile, pipe, env_extra):
    profile.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "SAL_ENABLE_FILE_LOCKING": "0", "TMPDIR": str(profile)}
    env.update(env_extra)
    return subprocess.Popen(
        [
            "soffice",
            "--headless",
            "--invisible",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--nolockcheck",
            f"--accept=pipe,name={pipe};urp;",
            f"-env:UserInstallation=file://{profile}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )


def run_libreoffice(config, files, repeat, scratch, timeout, read=OUTPUTS, after="OUT_MLP_PROJ"):
    """Time every book in one soffice started for `config`; yields one result dict per book, with the values of
    the defined names `read` after the first recalculation and of `after` after the edits."""
    threaded, env, _ = CONFIGS[config]
    profile = scratch / f"profile-{config}"
    pipe = f"h26-layouts-{os.getpid()}-{config}"
    soffice = start_soffice(profile, pipe, env)
    try:
        job = {"pipe": pipe, "pgid": soffice.pid, "threaded": threaded, "files": [str(f) for f in files]}
        job.update(repeat=repeat, read=list(read), after=after)
        driver = subprocess.Popen(
            ["/usr/bin/python3", __file__, "--uno-driver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        driver.stdin.write(json.dumps(job))
        driver.stdin.close()
        deadline = time.monotonic() + timeout
        for line in driver.stdout:
            yield json.loads(line)
            if time.monotonic() > deadline:
                break
        driver.kill()
        driver.wait()
    finally:
        try:
            os.killpg(soffice.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        soffice.wait()
        subprocess.run(["rm", "-rf", str(profile)])


def uno_driver():
    """Under /usr/bin/python3 (it has `uno`): the job on stdin, one JSON line per book on stdout."""
    import uno
    from com.sun.star.beans import PropertyValue

    job = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def prop(name, value):
        p = PropertyValue()
        p.Name, p.Value = name, value
        return p

    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    t0 = time.monotonic()
    while True:
        try:
            ctx = resolver.resolve(f"uno:pipe,name={job['pipe']};urp;StarOffice.ComponentContext")
            break
        except Exception:
            if time.monotonic() - t0 > 120:
                raise
            time.sleep(0.2)
    smgr = ctx.ServiceManager
    provider = smgr.createInstanceWithContext("com.sun.star.configuration.ConfigurationProvider", ctx)

    def configure(path, **values):
        access = provider.createInstanceWithArguments(
            "com.sun.star.configuration.ConfigurationUpdateAccess", (prop("nodepath", path),)
        )
        for k, v in values.items():
            access.setPropertyValue(k, v)
        access.commitChanges()

    configure("/org.openoffice.Office.Calc/Formula/Load", OOXMLRecalcMode=1, ODFRecalcMode=1)  # load = import only
    configure("/org.openoffice.Office.Calc/Formula/Calculation", UseThreadedCalculationForFormulaGroups=job["threaded"])
    configure("/org.openoffice.Office.Common/Misc", UseOpenCL=False)
    desktop = smgr.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        """(user + system seconds of every process in soffice's group, of its "thread-pool" threads): LibreOffice
        computes a formula group in its thread pool (comphelper::ThreadPool); everything else, an API call's
        recalculation included, runs on the thread serving the call."""
        total = pool = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    if int(fields[2]) != job["pgid"]:
                        continue
                    total += int(fields[11]) + int(fields[12])
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        if open(f"/proc/{pid}/task/{tid}/comm").read().strip() == "thread-pool":
                            own = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                            pool += int(own[11]) + int(own[12])
                except OSError:
                    continue
        return total / tick, pool / tick

    def timed(fn):
        """(wall seconds, CPU seconds per wall second, the share of that CPU time spent in the thread pool)."""
        (c0, p0), t0 = cpu(), time.monotonic()
        fn()
        wall = time.monotonic() - t0
        (c1, p1) = cpu()
        if wall < 0.05 or c1 <= c0:
            return round(wall, 3), None, None
        return round(wall, 3), round((c1 - c0) / wall, 2), round((p1 - p0) / (c1 - c0), 2)

    for path in job["files"]:
        result = {"file": path}
        try:
            t0 = time.monotonic()
            props = (prop("Hidden", True), prop("MacroExecutionMode", 0), prop("UpdateDocMode", 0))
            doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(path), "_blank", 0, props)
            result["load"] = round(time.monotonic() - t0, 2)
            names = doc.NamedRanges
            runs = [timed(doc.calculateAll) for _ in range(job["repeat"])]
            best = min(runs, key=lambda r: r[0])
            result["calc_all"], result["calc_all_cpu"], result["calc_all_pool"] = best
            result["calc_all_runs"] = [r[0] for r in runs]
            result["values"] = {
                n: [list(r) for r in names.getByName(n).getReferredCells().getDataArray()] for n in job["read"]
            }
            x = names.getByName("X_IN").getReferredCells()
            rows = x.getDataArray()
            new = tuple(tuple(v * 0.5 + 0.25 for v in r) for r in rows)
            # the edit (setDataArray: LibreOffice marks what depends on it dirty) and the recalculation, timed apart
            (set_all, *_), (calc, result["edit_all_cpu"], result["edit_all_pool"]) = (
                timed(lambda: x.setDataArray(new)),
                timed(doc.calculate),
            )
            result["edit_all"], result["edit_all_set"] = round(set_all + calc, 3), set_all
            col = x.getCellRangeByPosition(len(rows[0]) - 1, 0, len(rows[0]) - 1, len(rows) - 1)
            newcol = tuple((r[-1] * 2.0 - 0.5,) for r in rows)
            (set_one, *_), (calc, result["edit_one_cpu"], _) = (
                timed(lambda: col.setDataArray(newcol)),
                timed(doc.calculate),
            )
            result["edit_one"], result["edit_one_set"] = round(set_one + calc, 3), set_one
            result["after_edits"] = [list(r) for r in names.getByName(job["after"]).getReferredCells().getDataArray()]
            doc.close(True)
        except Exception as e:  # reported, and the next book is tried
            result["error"] = f"{type(e).__name__}: {e}"
        out.write(json.dumps(result) + "\n")


# --- IronCalc ----------------------------------------------------------------------------------------------
def run_ironcalc(path, names):
    """Load and evaluate a book with IronCalc; the values of the four products (read cell by cell)."""
    import ironcalc
    import numpy as np

    t0 = time.perf_counter()
    m = ironcalc.load_from_xlsx(str(path), "en", "UTC")
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    m.evaluate()
    calc = time.perf_counter() - t0
    sheets = {"Block": 0}
    values = {}
    for key in ("OUT_QKV", "OUT_ATTN_PROJ", "OUT_FC", "OUT_MLP_PROJ"):
        r = names[key]
        values[key] = np.array(
            [
                [m.get_cell_value(sheets[r.sheet], r.top + i, r.left + j) for j in range(r.width)]
                for i in range(r.height)
            ],
            dtype=object,
        )
    return load, calc, values


# --- the comparison -------------------------------------------------------------------------------------------
def max_rel_error(values, ref):
    import numpy as np

    got = np.array([[v if isinstance(v, (int, float)) else np.nan for v in row] for row in values], float)
    if got.shape != ref.shape:
        return float("inf")
    err = np.abs(got - ref) / (1 + np.abs(ref))
    return float(np.nanmax(err)) if not np.isnan(err).any() else float("inf")


def main():
    if "--uno-driver" in sys.argv:
        return uno_driver()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--configs", default="off,1,2", help=f"LibreOffice configurations: {','.join(CONFIGS)}, or none")
    ap.add_argument("--positions", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="calculateAll() runs per book (the best is shown)")
    ap.add_argument("--dir", default="/tmp/h26/layouts", help="where the books and soffice profiles go")
    ap.add_argument(
        "--ironcalc",
        default="today,today-T,sp-row,mmultcell,block",
        help="layouts IronCalc evaluates, or 'none' (sp-col: #VALUE!, IronCalc has no range of INDEX references; "
        "sp-col0: it copies the whole matrix at every INDEX, far too slow)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the books")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument(
        "--lens", type=int, metavar="VOCAB", help="instead, time the logit lens's layouts at this vocabulary"
    )
    args = ap.parse_args()
    scratch = Path(args.dir)
    scratch.mkdir(parents=True, exist_ok=True)
    layouts = args.layouts.split(",")
    configs = [] if args.configs == "none" else args.configs.split(",")
    if args.lens:
        return lens_bench(args, configs, scratch)
    T = args.positions
    weights, x, ref = model(T, seed=26)
    macs = T * sum(fan_in * fan_out for _, fan_in, fan_out, _ in PRODUCTS)
    print(f"one GPT-2 124M block's products at context {T}: {macs / 1e6:.1f}M multiply-adds per full recalculation")
    books, info = {}, {}
    for layout in layouts:
        path = scratch / f"{layout}.xlsx"
        t0 = time.perf_counter()
        formulas = build(layout, weights, x, path)
        books[layout] = path
        info[layout] = (formulas, path.stat().st_size / 1e6, time.perf_counter() - t0)
        print(f"  wrote {path}: {formulas:,} formula cells, {info[layout][1]:.1f} MB in {info[layout][2]:.1f} s")

    # the reference after the edits the driver makes: x -> 0.5x + 0.25, then the last column -> 2 x_old - 0.5
    xr = ref["x"]
    x2 = xr * 0.5 + 0.25
    x2[:, -1] = xr[:, -1] * 2.0 - 0.5
    after = {"x": x2}
    for name, _, _, (src, start, stop) in PRODUCTS:
        w, b = weights[name]
        after[name] = w.astype(str).astype(float).T @ after[src][start:stop] + b.astype(str).astype(float)[:, None]
    keys = {"OUT_QKV": "qkv", "OUT_ATTN_PROJ": "attn_proj", "OUT_FC": "fc", "OUT_MLP_PROJ": "mlp_proj"}

    rows = []
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    for config in configs:
        print(f"LibreOffice, {CONFIGS[config][2]} ...", flush=True)
        for r in run_libreoffice(config, [books[k] for k in layouts], args.repeat, scratch, args.timeout):
            layout = Path(r["file"]).stem
            if "error" in r:
                print(f"  {layout}: {r['error']}", flush=True)
                continue
            err = max(max_rel_error(r["values"][k], ref[v]) for k, v in keys.items())
            err_after = max_rel_error(r["after_edits"], after["mlp_proj"])
            rows.append((layout, config, r, err, err_after))
            print(
                f"  {layout:>10}: load {r['load']:.1f} s, calcAll {r['calc_all_runs']} s (cpu/wall "
                f"{r['calc_all_cpu']}, in the thread pool {r['calc_all_pool']}), edit all {r['edit_all']} s "
                f"(set {r['edit_all_set']}, cpu/wall {r['edit_all_cpu']}, pool {r['edit_all_pool']}), "
                f"edit one {r['edit_one']} s (set {r['edit_one_set']}), "
                f"max rel err {err:.1e} / after edits {err_after:.1e}",
                flush=True,
            )
    ironcalc = {}
    if args.ironcalc != "none":
        print("IronCalc ...", flush=True)
        from xlgpt.sheet.layout import Rect

        names = {}
        row = 3 + D + 1
        for name, _, fan_out, _ in PRODUCTS:
            names[f"OUT_{name.upper()}"] = Rect("Block", row, FIRST, fan_out, T)
            row += fan_out + 1
        for layout in [k for k in layouts if k in args.ironcalc.split(",")]:
            try:
                load, calc, values = run_ironcalc(books[layout], names)
                err = max(max_rel_error(values[k], ref[v]) for k, v in keys.items())
            except Exception as e:
                print(f"  {layout}: {type(e).__name__}: {e}", flush=True)
                continue
            ironcalc[layout] = (load, calc, err)
            print(f"  {layout:>10}: load {load:.1f} s, evaluate {calc:.1f} s, max rel err {err:.1e}", flush=True)

    print()
    print(
        "| layout | formula cells | MB | engine, config | load s | calcAll s | M mult-add/s | cpu/wall | in pool "
        "| edit all s (set + calc) | cpu/wall | edit one s (set + calc) | max rel err |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for layout, config, r, err, err_after in rows:
        formulas, mb, _ = info[layout]
        print(
            f"| {layout} | {formulas:,} | {mb:.0f} | LibreOffice {CONFIGS[config][2]} | {r['load']:.1f} "
            f"| {r['calc_all']:.2f} | {macs / r['calc_all'] / 1e6:.0f} | {r['calc_all_cpu']} "
            f"| {r['calc_all_pool']} "
            f"| {r['edit_all']:.2f} ({r['edit_all_set']:.2f} + {r['edit_all'] - r['edit_all_set']:.2f}) "
            f"| {r['edit_all_cpu']} | {r['edit_one']:.2f} ({r['edit_one_set']:.2f} + "
            f"{r['edit_one'] - r['edit_one_set']:.2f}) | {max(err, err_after):.0e} |"
        )
    for layout, (load, calc, err) in ironcalc.items():
        formulas, mb, _ = info[layout]
        print(
            f"| {layout} | {formulas:,} | {mb:.0f} | IronCalc | {load:.1f} | {calc:.2f} | {macs / calc / 1e6:.1f} "
            f"| - | - | - | - | - | {err:.0e} |"
        )
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if not args.keep:
        for path in books.values():
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
