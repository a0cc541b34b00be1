"""Activation patching (a book built with --corrupted): the model runs three times, on the clean prompt (the
book's own tabs), on the corrupted one (the Corrupted tabs) and on the corrupted one again with one activation
taken from the clean run (the Patched tabs). The Patching tab holds the corrupted ids, the cells that say what
to patch, the logit difference of each run, xlgpt patch's heatmaps of every patch, and attribution patching's
estimate of them from the corrupted run's backward pass (its own backward tabs)."""

from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import BOLD, INPUT, NUMBER, PERCENT, diverging_scale

COMPONENT_NOTES = {  # what each PatchComponent number patches, as the tab lists them
    "nothing": "nothing (the patched run is the corrupted run)",
    "resid_pre": "the residual stream entering block PatchLayer, at PatchPosition",
    "attn_out": "the attention output of block PatchLayer, at PatchPosition",
    "mlp_out": "the MLP output of block PatchLayer, at PatchPosition",
    "head": "head PatchHead's output in block PatchLayer, at every position",
}


def patch(component):
    """The op for one component: in the patched run, y = IF(the Patch cells name this place, the clean run's
    activation, x); in every other run (and book) it writes nothing and x flows on."""
    code = C.PATCH_COMPONENTS.index(component)

    def lower(ctx, x):
        if ctx.run != C.RUNS[-1]:
            return x
        clean = ctx.clean_input(0)
        names = {name: ctx.named(name) for name in C.PATCH_CELLS}
        out = ctx.block(ctx.rows(f"{ctx.stage.name} (patched)", x.height))
        here = dict(component=names[C.PATCH_COMPONENT], code=code, layer=names[C.PATCH_LAYER], here=ctx.stage.layer)
        if component == "head":
            d = ctx.cfg.head_size
            for h in range(ctx.cfg.n_head):
                rows = (h * d, (h + 1) * d)
                ctx.array(
                    out.rows(*rows),
                    "IF(AND({component}={code},{layer}={here},{head}={h}),{clean},{x})",
                    head=names[C.PATCH_HEAD],
                    h=h,
                    clean=clean.rows(*rows),
                    x=x.rows(*rows),
                    **here,
                )
            return out
        return ctx.array(
            out,
            "IF(AND({component}={code},{layer}={here},{position}={t}),{clean},{x})",
            position=names[C.PATCH_POSITION],
            t=ctx.positions,
            clean=clean,
            x=x,
            **here,
        )

    return lower


def patch_backward(ctx, dy, x):
    """Differentiated in the corrupted run only, where nothing is patched: y = x, ∂L/∂x = ∂L/∂y."""
    return [dy]


def panel(ctx, contrast):
    """The Patching tab's cells, under the corrupted ids in its header: the answer and foil tokens, and
    PatchComponent, PatchLayer, PatchPosition, PatchHead (default: patch nothing)."""
    tab, cfg = ctx.tab, ctx.cfg
    clean = ctx.lowering.headers[ctx.lowering.inputs_tab]  # the clean prompt's, for comparison
    shown = clean.text if clean.text is not None else clean.ids
    tab.format(ctx.array(tab.line("clean prompt's token", ctx.T), "{t}", t=shown), BOLD)
    tab.skip()
    tab.note(
        "The book runs the model three times: on the clean prompt (the tabs without a prefix), on the corrupted "
        "prompt in the header above (the Corrupted tabs), and on the corrupted prompt again with one activation "
        "taken from the clean run (the Patched tabs). Edit a yellow cell, then recalculate.",
        gap=1,
        fit=90,
    )
    cells = {}
    for name, token in ((C.ANSWER_TOKEN, contrast.answer), (C.FOIL_TOKEN, contrast.foil)):
        cells[name] = tab.field(name, token, INPUT)
        if ctx.vocab is not None:
            tab.put(cells[name].cell(0, 1), [[ctx.formula(f"INDEX({C.VOCABULARY},{name}+1)")]], BOLD)
    tab.skip()
    for code, note in enumerate(COMPONENT_NOTES.values()):
        tab.note(f"PatchComponent {code}: {note}")
    for name, value, note in (
        (C.PATCH_COMPONENT, 0, f"0 … {len(C.PATCH_COMPONENTS) - 1}, as listed above"),
        (C.PATCH_LAYER, 0, f"0 … {cfg.n_layer - 1}"),
        (C.PATCH_POSITION, 0, f"0 … {ctx.T - 1}"),
        (C.PATCH_HEAD, 0, f"0 … {cfg.n_head - 1}"),
    ):
        cells[name] = tab.field(name, value, INPUT)
        tab.put(cells[name].cell(0, 1), [[note]])
    tab.skip()
    for name, rect in {C.CORRUPTED_TOKEN_IDS: ctx.token_ids, **cells}.items():
        ctx.name(name, rect)


def metrics(ctx, logits):
    """LogitDiff for each run ({run: its logits block}: clean, corrupted, patched), and PatchedMetric."""
    tab, blocks = ctx.tab, list(logits.values())
    tab.title("The metric: answer logit − foil logit at the last position (LogitDiff), per run")
    tab.put(tab.line("", len(blocks)), [list(logits)], BOLD)
    row = tab.each(
        tab.line(C.LOGIT_DIFF, len(blocks)),
        "INDEX({logits},{answer}+1,{last})-INDEX({logits},{foil}+1,{last})",
        logits=lambda _, j: blocks[j],
        answer=ctx.named(C.ANSWER_TOKEN),
        foil=ctx.named(C.FOIL_TOKEN),
        last=ctx.last_position,
    )
    metric = tab.field(C.PATCHED_METRIC)
    tab.put(metric.cell(0, 1), [["(patched − corrupted) / (clean − corrupted): 1 restores the clean run"]])
    tab.format(
        tab.each(
            metric,
            "({patched}-{corrupted})/({clean}-{corrupted})",
            clean=row.at(0),
            corrupted=row.at(1),
            patched=row.at(2),
        ),
        PERCENT,
    )
    ctx.name(C.LOGIT_DIFF, row)
    ctx.name(C.PATCHED_METRIC, metric)
    return row


HEATMAP_TITLES = {
    "resid_pre": "Patching the residual stream entering each block, at each position",
    "attn_out": "Patching each attention output, at each position",
    "mlp_out": "Patching each MLP output, at each position",
    "head": "Patching each head's output, at every position (columns: heads 0, 1, …)",
}
HEATMAP_SHORT = {"resid_pre": "residual", "attn_out": "attention", "mlp_out": "MLP", "head": "heads"}


# the PatchingStatus cell: how to fill the heatmaps, or who filled them
STATUS_EMPTY = "empty: xlgpt patch BOOK --out NEW.xlsx computes every patch and writes them into NEW.xlsx"
STATUS_DONE = "computed by xlgpt patch, one patch at a time; xlgpt eval checks them against the reference's"


def heatmaps(ctx, contrast):
    """xlgpt patch's heatmaps: PatchedMetric for every patch, layers down, positions (or heads) across;
    empty until it fills them in a copy of the book."""
    tab, cfg = ctx.tab, ctx.cfg
    tab.title("Activation patching, every patch: PatchedMetric (1: the clean run's logit difference restored)")
    ctx.name(C.PATCHING_STATUS, tab.field("heatmaps", STATUS_DONE if contrast.heatmaps else STATUS_EMPTY))
    tab.skip()
    for component, name in C.PATCHING_HEATMAPS.items():
        width = cfg.n_head if component == "head" else ctx.T
        block = ctx.block([(f"layer {i}", None) for i in range(cfg.n_layer)], HEATMAP_TITLES[component], width)
        held = contrast.heatmaps[component] if contrast.heatmaps else [[""] * width] * cfg.n_layer
        tab.put(block, held, PERCENT)
        tab.heatmap(tab.format(block, PERCENT), diverging_scale())
        ctx.name(name, block)


def logit_diff_gradient(ctx, logits):
    """∂LogitDiff/∂logits, where attribution patching's backward pass starts: 1 at (AnswerToken, LastPosition),
    −1 at (FoilToken, LastPosition), 0 elsewhere."""
    labels = [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * logits.height)]
    d = ctx.block(labels, "∂LogitDiff/∂logits: +1 at the answer token, −1 at the foil, in the last position's column")
    return ctx.array(
        d,
        "IF({t}+1={last},IF({ids}={answer},1,0)-IF({ids}={foil},1,0),0)",
        t=ctx.positions,
        last=ctx.last_position,
        ids=d.index_column(),
        answer=ctx.named(C.ANSWER_TOKEN),
        foil=ctx.named(C.FOIL_TOKEN),
    )


ATTRIBUTION_TITLES = {
    component: title.replace("Patching", "Attribution patching,", 1) for component, title in HEATMAP_TITLES.items()
}


def attribution(ctx, at, logit_diff):
    """Attribution patching (Nanda 2023): every patch of the heatmaps to first order, in one recalculation: the
    corrupted run's ∂LogitDiff/∂activation · (clean − corrupted activation), over (clean − corrupted LogitDiff),
    summed over the activation's features (and a head's positions). `at`: {component: [(∂LogitDiff/∂a, clean a,
    corrupted a) of each layer]}; `logit_diff`: the LogitDiff row. With each heatmap's correlation."""
    tab, cfg = ctx.tab, ctx.cfg
    tab.title("Attribution patching, in formulas: each patch to first order, from the corrupted run's gradient")
    tab.note(
        "∂LogitDiff/∂activation (the Corrupted … backward tabs) · (clean − corrupted activation) / (clean − "
        "corrupted LogitDiff): one recalculation instead of a run per patch; compare it with the heatmaps above.",
        fit=90,
    )
    term = "(SUMPRODUCT({d},{clean})-SUMPRODUCT({d},{x}))/({lc}-{lx})"
    metric = dict(lc=logit_diff.at(0), lx=logit_diff.at(1))
    d = cfg.head_size
    blocks = {}
    for component, name in C.ATTRIBUTION_PATCHING.items():
        width = cfg.n_head if component == "head" else ctx.T
        block = ctx.block([(f"layer {i}", None) for i in range(cfg.n_layer)], ATTRIBUTION_TITLES[component], width)
        if component == "head":  # head j's rows, at every position
            part = lambda k: lambda i, j: at[component][i][k].rows(j * d, (j + 1) * d)
        else:
            part = lambda k: lambda i, t: at[component][i][k].col(t)
        tab.each(block, term, d=part(0), clean=part(1), x=part(2), **metric)
        tab.heatmap(tab.format(block, PERCENT), diverging_scale())
        ctx.name(name, block)
        blocks[component] = block
    tab.put(tab.line("", len(blocks)), [[HEATMAP_SHORT[c] for c in blocks]], BOLD)
    correlation = tab.each(
        tab.line(f"{C.ATTRIBUTION_CORRELATION}: with the heatmap", len(blocks)),
        'IF(COUNT({exact})=0,"after xlgpt patch",CORREL({exact},{attribution}))',
        exact=lambda _, j: ctx.named(list(C.PATCHING_HEATMAPS.values())[j]),
        attribution=lambda _, j: list(blocks.values())[j],
    )
    ctx.name(C.ATTRIBUTION_CORRELATION, tab.format(correlation, NUMBER))
