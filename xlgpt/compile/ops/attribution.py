"""Direct logit attribution: how much each head, each MLP and the embeddings push the target token's
logit at the prompt's last token, through ln_f with that position's scale held fixed (TransformerLens'
convention). A component's output c adds c · AttributionDirection, where
AttributionDirection = (ln_f.weight ⊙ wte[target] − its mean) / sqrt(variance of x + eps)."""

from xlgpt.compile.ops.projection import head
from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import BOLD, INPUT, SECTION, SIGNED, diverging_scale


def attribution(ctx, heads, mlp):
    """Row per component at every position: head h's switched output times c_proj's rows for that head,
    then · direction; the output bias · direction; the MLP's switched output · direction."""
    cfg, d = ctx.cfg, ctx.cfg.head_size
    w, b = ctx.weight("weight"), ctx.weight("bias")
    back = ctx.block(
        ctx.rows("c_proj · direction", cfg.n_embd), ctx.title + ": the direction, back through c_proj", width=1
    )
    ctx.array(back, "MMULT({w},{direction})", w=ctx.as_is(w), direction=C.ATTRIBUTION_DIRECTION)
    labels = [(f"head {h}", None) for h in range(cfg.n_head)] + [("attention output bias", None), ("MLP", None)]
    rows = ctx.block(labels, ctx.title + ": direct contribution to the target's logit at each position")
    for h in range(cfg.n_head):
        ctx.array(
            rows.row(h),
            "MMULT(TRANSPOSE({back}),{heads})",
            back=head(back, 0, h, cfg),
            heads=heads.rows(h * d, (h + 1) * d),
        )
    ctx.each(rows.row(cfg.n_head), "SUMPRODUCT({b},{direction})", b=b, direction=C.ATTRIBUTION_DIRECTION)
    ctx.array(
        rows.row(cfg.n_head + 1), "MMULT(TRANSPOSE({direction}),{mlp})", direction=C.ATTRIBUTION_DIRECTION, mlp=mlp
    )
    return rows


def attribution_table(ctx, streams, layers, logits):
    """The target token, the table of every layer's components at the prompt's last token and the other terms
    (embeddings, steering, ln_f's bias) that add up with it to the target's logit; then how the direction is
    computed."""
    cfg, tab = ctx.cfg, ctx.tab
    g, b, wte = ctx.weight("weight"), ctx.weight("bias"), ctx.token_table()
    tab.sheet.widths[1] = 52
    tab.note(
        "Which components write the target token's logit? Type a token id into the yellow cell (default: "
        "the predicted token), then recalculate.",
        gap=1,
    )
    target = tab.field(
        "AttributionToken (target token id)",
        ctx.formula(f"IF(ISNUMBER({C.PREDICTED_TOKEN}),{C.PREDICTED_TOKEN},0)"),
        INPUT,
    )
    if ctx.vocab is not None:
        tab.put(target.cell(0, 1), [[ctx.formula(f"INDEX({C.VOCABULARY},{C.ATTRIBUTION_TOKEN}+1)")]])
    position = tab.field("AttributionPosition", ctx.formula(ctx.last_position))
    tab.put(position.cell(0, 1), [["the prompt's last token's column: its position + 1"]])
    tab.skip()
    # first what a person reads (the table), then how it is computed: blocks placed first, formulas after
    tab.title("AttributionTable: each component's direct contribution to the target's logit (blue up, red down)")
    tab.put(tab.line("", cfg.n_head + 2), [[f"head {h}" for h in range(cfg.n_head)] + ["attn bias", "MLP"]], BOLD)
    table = tab.block([(f"layer {i}", None) for i in range(cfg.n_layer)], cfg.n_head + 2)
    other = ctx.block(
        [("embeddings (token + position)", None), ("steering", None), ("ln_f.bias · wte[target]", None)],
        "The other terms",
        width=1,
    )
    logit = tab.field(
        "The target's logit (Logits at that token and position)",
        ctx.formula(f"INDEX({logits.ref(tab.name)},{C.ATTRIBUTION_TOKEN}+1,{C.ATTRIBUTION_POSITION})"),
    )
    tab.field(
        "Check: table + other terms − logit (0 up to rounding)",
        ctx.formula(f"SUM({table.ref(tab.name)})+SUM({other.ref(tab.name)})-{logit.ref(tab.name)}"),
    )
    tab.skip()
    tab.banner("How the direction is computed", SECTION)
    onehot = ctx.last_position_row()
    final = ctx.block(ctx.rows("x", cfg.n_embd), "The final residual stream at that position", width=1)
    scale = tab.field(
        "sqrt(variance + eps) of that column: ln_f's scale, held fixed",
        ctx.formula(
            f"SQRT(SUMPRODUCT(({final.ref(tab.name)}-AVERAGE({final.ref(tab.name)}))^2)/"
            f"{cfg.n_embd}+{ctx.number(cfg.layer_norm_epsilon)})"
        ),
    )
    tab.skip()
    unembedding = ctx.block(ctx.rows("wte[target]", cfg.n_embd), "The target's row of wte", width=1)
    u = ctx.block(ctx.rows("u", cfg.n_embd), "u = ln_f.weight ⊙ wte[target]", width=1)
    direction = ctx.block(ctx.rows("direction", cfg.n_embd), "AttributionDirection: (u − mean of u) / scale", width=1)

    ctx.array(final, "MMULT({x},TRANSPOSE({onehot}))", x=streams[-1], onehot=onehot)
    # LOOKUP in wte's index column, as the embedding does (INDEX costs the `formulas` package ~0.1 s a cell here)
    ctx.each(
        unembedding,
        "LOOKUP({target},{ids},{w})",
        ids=wte.index_column(),
        w=lambda i, _: wte.col(i),
        target=C.ATTRIBUTION_TOKEN,
    )
    ctx.array(u, "{g}*{w}", g=g, w=unembedding)
    ctx.array(direction, "({u}-AVERAGE({u}))/{scale}", u=u, scale=scale)
    for i, rows in enumerate(layers):
        ctx.array(table.row(i), "TRANSPOSE(MMULT({rows},TRANSPOSE({onehot})))", rows=rows, onehot=onehot)
    tab.heatmap(tab.format(table, SIGNED), diverging_scale())
    ctx.each_array(
        other.row(0),
        "SUM(MMULT({x},TRANSPOSE({onehot}))*{direction})",
        x=streams[0],
        onehot=onehot,
        direction=direction,
    )
    ctx.each(
        other.row(1),
        "IF(AND({layer}>=0,{layer}<{n}),{coefficient}*SUMPRODUCT({vector},{direction}),0)",
        layer=C.STEERING_LAYER,
        n=cfg.n_layer,
        coefficient=C.STEERING_COEFFICIENT,
        vector=C.STEERING_VECTOR,
        direction=direction,
    )
    ctx.each(other.row(2), "SUMPRODUCT({b},{w})", b=b, w=unembedding)
    for name, rect in (
        (C.ATTRIBUTION_TOKEN, target),
        (C.ATTRIBUTION_POSITION, position),
        (C.ATTRIBUTION_DIRECTION, direction),
        (C.ATTRIBUTION_TABLE, table),
        (C.ATTRIBUTION_OTHER, other),
        (C.ATTRIBUTION_LOGIT, logit),
    ):
        ctx.name(name, rect)
    return table
