"""From the last residual stream to a prediction: logits, probabilities, the top tokens."""

from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import BOLD, IDS, PERCENT


def unembed(ctx, x, title=None):
    """logits[v, t] = wte[v] · x[:, t] (GPT-2's LM head is tied to the token embedding): a block titled `title`
    (default: the stage's), one row per vocabulary entry."""
    table = ctx.token_table()
    labels = [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * table.height)]
    logits = ctx.block(labels, title, x.width)
    return ctx.product(logits, "MMULT({wte},{x})", "0*{column}", wte=table, x=x, column=table.col(0))


def unembed_backward(ctx, dlogits, x):
    """logits = wte·x: ∂L/∂x = wteᵀ·∂L/∂logits, and wte's gradient through the LM head is ∂L/∂logits·xᵀ."""
    table, name = ctx.token_table(), ctx.input_name(0)
    dx = ctx.block(ctx.rows(f"∂L/∂{name}", x.height), f"∂L/∂{name} = wteᵀ · ∂L/∂{ctx.stage.name}")
    ctx.array(dx, "MMULT(TRANSPOSE({wte}),{d})", wte=table, d=dlogits)
    ctx.grad_outer("table", dlogits, x, f"through the LM head: ∂L/∂{ctx.stage.name} · {name}ᵀ")
    return [dx]


def argmax(ctx, logits):
    """prediction[t] = the token id of the largest logit at position t (the lowest id among ties)."""
    out, text = ctx.result_row()
    ctx.tab.format(ctx.each(out, "MATCH(MAX({l}),{l},0)-1", l=lambda _, t: logits.col(t)), IDS)
    if text is not None:
        ctx.each(text, "INDEX({vocab},{id}+1)", vocab=C.VOCABULARY, id=lambda _, t: out.col(t))
    return out


def softmax_stats(ctx, logits, title):
    """Each column's largest logit and sum of exp(logit - largest): the softmax's two numbers per position."""
    stats = ctx.block([("largest logit", None), ("sum of exp(logit - largest)", None)], title, logits.width)
    ctx.each(stats.row(0), "MAX({l})", l=lambda _, t: logits.col(t))
    ctx.each_array(stats.row(1), "SUM(EXP({l}-{mx}))", l=lambda _, t: logits.col(t), mx=lambda _, t: stats.cell(0, t))
    return stats.row(0), stats.row(1)


def probabilities(ctx, logits):
    """p[v, t] = exp(logit[v, t] - max_t) / sum over v of exp(logit - max_t): the softmax of each column."""
    mx, total = softmax_stats(ctx, logits, ctx.title + ": each column's largest logit and sum of exponentials")
    labels = [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * logits.height)]
    out = ctx.array(ctx.block(labels, ctx.title), "EXP({l}-{mx})/{total}", l=logits, mx=mx, total=total)
    ctx.name(C.PROBABILITIES, out)
    return ctx.tab.heatmap(ctx.tab.format(out, PERCENT), ctx.heat)


def top_k(ctx, probs, k=5):
    """The k most probable next tokens at the prompt's last token: the k largest p (ties: lower id first)."""
    last = ctx.at_last_position(probs, ctx.title + ": the probabilities at the prompt's last token")
    ctx.tab.title(ctx.title)
    ctx.tab.put(ctx.tab.line("", 3), [["token id", "token", "probability"]], BOLD)
    table = ctx.tab.block([(f"rank {r + 1}", None) for r in range(k)], 3)
    ids, texts, ps = table.col(0), table.col(1), table.col(2)
    ctx.each(ps, "LARGE({p},{r})", PERCENT, p=last, r=lambda r, _: r + 1)
    ctx.each(ids.row(0), "MATCH({v},{p},0)-1", IDS, v=ps.cell(0, 0), p=last)
    # a tie with the rank above: the next occurrence of the value, below that rank's row
    ctx.each(
        ids.rows(1, k),
        "IF({v}={above},{prev}+MATCH({v},INDEX({p},{prev}+2):INDEX({p},{n}),0),MATCH({v},{p},0)-1)",
        IDS,
        v=lambda r, _: ps.cell(r + 1, 0),
        above=lambda r, _: ps.cell(r, 0),
        prev=lambda r, _: ids.cell(r, 0),
        p=last,
        n=last.height,
    )
    if ctx.vocab is not None:
        ctx.each(texts, "INDEX({vocab},{id}+1)", vocab=C.VOCABULARY, id=lambda r, _: ids.cell(r, 0))
    ctx.name(C.TOP_K_TOKENS, ids)
    ctx.name(C.TOP_K_PROBABILITIES, ps)
    return table
