"""Head detectors: how much each head attends the way a previous-token, an induction or a duplicate-token head
does, on the book's own prompt, as TransformerLens' detect_head with the "mul" measure."""

from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import IDS, PERCENT


def head_detectors(ctx, weights):
    """score[layer, head] = Σ A·D / Σ A over the prompt's queries, A the head's attention weights [key, query],
    D a detection pattern: 1 where a head of that kind attends (D is 0 at the padding's queries)."""
    positions, ids, used = ctx.positions, ctx.token_ids, ctx.header.in_prompt
    keys = ctx.rows("key position", ctx.T)
    prompt = ctx.block(keys, "U: 1 at the prompt's queries (columns), 0 at the padding's")
    if used is None:  # a token-ids book: the positions before LastPosition
        ctx.each(prompt, "IF({t}<{last},1,0)", t=lambda _, t: positions.col(t), last=ctx.last_position)
    else:
        ctx.each(prompt, "{u}", u=lambda _, t: used.col(t))
    ctx.tab.format(prompt, IDS)
    key, query = (lambda s, _: positions.col(s)), (lambda _, t: positions.col(t))
    previous = pattern(ctx, keys, "previous token", "the previous position")
    ctx.each(previous, "IF({s}={t}-1,{u},0)", s=key, t=query, u=lambda s, t: prompt.cell(s, t))
    duplicate = pattern(ctx, keys, "duplicate token", "an earlier copy of the query's token")
    ctx.each(
        duplicate,
        "IF({s}<{t},IF({a}={b},{u},0),0)",
        s=key,
        t=query,
        a=lambda s, _: ids.col(s),
        b=lambda _, t: ids.col(t),
        u=lambda s, t: prompt.cell(s, t),
    )
    # induction: the key right after an earlier copy (or this one), i.e. the duplicate pattern moved down a key
    induction = pattern(ctx, keys, "induction", "the position after an earlier copy of the query's token")
    ctx.tab.put(induction.row(0), [[0] * ctx.T])
    if ctx.T > 1:
        ctx.each(
            induction.rows(1, ctx.T),
            "IF({s}<={t},IF({a}={b},{u},0),0)",
            s=lambda s, _: positions.col(s + 1),
            t=query,
            a=lambda s, _: ids.col(s),
            b=lambda _, t: ids.col(t),
            u=lambda s, t: prompt.cell(s + 1, t),
        )
    heads = [(f"layer {layer}", None) for layer in range(len(weights))]
    for name, kind, d in (
        (C.PREVIOUS_TOKEN_SCORES, "previous token", previous),
        (C.INDUCTION_SCORES, "induction", induction),
        (C.DUPLICATE_TOKEN_SCORES, "duplicate token", duplicate),
    ):
        scores = ctx.block(
            heads,
            f"{kind.capitalize()} score: Σ A·D / Σ A (rows: layers, columns: heads 0 to {ctx.cfg.n_head - 1})",
            width=ctx.cfg.n_head,
        )
        ctx.each(scores, "SUMPRODUCT({a},{d})/SUMPRODUCT({a},{u})", a=lambda l, h: weights[l][h], d=d, u=prompt)
        ctx.tab.heatmap(ctx.tab.format(scores, PERCENT), ctx.heat)
        ctx.name(name, scores)
    return scores


def pattern(ctx, keys, kind, marks):
    """A T x T block for a detection pattern D, shown as a 0/1 heatmap."""
    block = ctx.block(keys, f"D, {kind}: 1 where the key (row) is {marks}")
    return ctx.tab.heatmap(ctx.tab.format(block, IDS), ctx.heat)
