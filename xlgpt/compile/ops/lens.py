"""The logit lens: read each residual stream as if it were the last, through ln_f and the unembedding."""

from xlgpt.compile.ops.norm import normalize
from xlgpt.compile.ops.output import softmax_stats, unembed
from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import IDS, LEVEL_SHADES, PERCENT, when


def lens(ctx, x):
    """What the model would predict from this residual stream: softmax(wte · ln_f(x)); its top token and
    that token's probability (= 1 / sum of exp(logit - largest)) at each position, or at the prompt's last
    token only in a book whose lens would be large (ctx.lens_at_last)."""
    g, b = ctx.weight("weight"), ctx.weight("bias")
    if ctx.lens_at_last:
        x = ctx.at_last_position(
            x, ctx.title + ": this residual stream at the prompt's last token", ctx.rows("x", x.height)
        )
    normed = normalize(ctx, x, g, b, "ln_f(x)", ctx.title + ": ln_f of this residual stream")
    logits = unembed(ctx, normed, ctx.title + ": logits, wte · ln_f(x)")
    mx, total = softmax_stats(ctx, logits, ctx.title + ": each column's largest logit and sum of exponentials")
    top = ctx.block([("top token", None), ("its probability", None)], ctx.title + ": the top token", x.width)
    ctx.each(top.row(0), "MATCH({mx},{l},0)-1", mx=lambda _, t: mx.col(t), l=lambda _, t: logits.col(t))
    ctx.each(top.row(1), "1/{total}", total=lambda _, t: total.col(t))
    ctx.tab.format(top.row(0), IDS)
    ctx.tab.format(top.row(1), PERCENT)
    return top


def lens_table(ctx, lenses):
    """The lens's top token and probability for every residual stream (rows) at every position (columns), or
    in one column at the prompt's last token."""
    streams = [("after the embeddings", None)] + [(f"after layer {i}", None) for i in range(len(lenses) - 1)]
    ctx.tab.note(
        "After the embeddings the stream is mostly the input token's own embedding, and the unembedding is that "
        "same table (tied): so the first row predicts the input token itself. Each layer moves it on."
    )
    width, where = lenses[0].width, ""
    if ctx.lens_at_last:
        where = " at the prompt's last token"
        ctx.tab.note(
            f"This book's lens reads only the prompt's last token (the column below, whatever position that is): "
            f"at every position it would be {len(lenses)} vocabulary-sized products per position (xlgpt build "
            f"--lens every)."
        )
        read = ctx.block([("position", None)], "The position this lens reads: the prompt's last token", width)
        ctx.tab.format(ctx.each(read, "{last}-1", last=ctx.last_position), IDS)
    texts = ctx.block(streams, f"Top token of each residual stream{where} (shaded by its probability)", width)
    probs = ctx.block(streams, "Its probability", width)
    ids = ctx.block(streams, "Its token id", width)
    for k, top in enumerate(lenses):
        ctx.each(ids.row(k), "{id}", id=lambda _, t: top.cell(0, t))
        ctx.each(probs.row(k), "{p}", p=lambda _, t: top.cell(1, t))
    if ctx.vocab is not None:
        ctx.each(texts, "INDEX({vocab},{id}+1)", vocab=C.VOCABULARY, id=lambda k, t: ids.cell(k, t))
    corner = probs.cell(0, 0).ref(ctx.tab.name, absolute=False)
    for level, dxf in sorted(LEVEL_SHADES.items(), reverse=True):  # the first rule that holds wins
        ctx.tab.heatmap(texts, when(f"{corner}>={level}", dxf))
    ctx.tab.heatmap(ctx.tab.format(probs, PERCENT), ctx.heat)
    ctx.tab.format(ids, IDS)
    ctx.name(C.LENS_TOP_TOKENS, ids)
    ctx.name(C.LENS_TOP_PROBABILITIES, probs)
    return ids
