"""The input and its embedding: x[:, t] = wte[token t] + wpe[t]."""

from xlgpt.sheet.styles import IDS


def tokens(ctx):
    """The token id at each position, in the header of the inputs tab (typed-in ids, or the ids the
    in-sheet tokenizer computes from the Prompt cell)."""
    return ctx.token_ids


def token_embedding(ctx, tokens):
    """e[i, t] = wte[tokens[t], i]: feature i's column of wte, at the row whose id (the table's index column,
    0, 1, 2, ...) is token t's. LOOKUP in that sorted column rather than INDEX: the same value in every engine,
    but the `formulas` package builds a reference object for every cell of the column on each INDEX (~30 ms
    per cell at a vocabulary of 512; the bundled model's embedding alone took it ~25 s)."""
    table = ctx.token_table()
    out = ctx.block(ctx.rows("feature", ctx.cfg.n_embd))
    return ctx.each(
        out,
        "LOOKUP({token},{ids},{w})",
        ids=table.index_column(),
        w=lambda i, t: table.col(i),
        token=lambda i, t: tokens.cell(0, t),
    )


def position_embedding(ctx):
    """p[i, t] = wpe[t, i]: the first T rows of wpe, as columns."""
    if ctx.T > ctx.cfg.n_positions:
        ctx.fail(f"{ctx.T} tokens exceed the model's context of {ctx.cfg.n_positions}")
    table = ctx.weight("table")
    out = ctx.block(ctx.rows("feature", ctx.cfg.n_embd))
    for t in range(ctx.T):  # position t's row of wpe, as column t
        ctx.array(out.col(t), "{p}", p=ctx.transposed(table, rows=(t, t + 1)))
    return out


def token_embedding_backward(ctx, de, tokens):
    """e[:, t] = wte[token t]: wte's gradient through the lookup is onehot · (∂L/∂e)ᵀ, each position's gradient
    added to its token's row (a token seen twice gets both)."""
    onehot = ctx.block(
        [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * ctx.cfg.vocab_size)],
        "One-hot of each position's token: 1 in the row of its id",
    )
    ctx.tab.format(ctx.array(onehot, "IF({ids}={token},1,0)", ids=onehot.index_column(), token=tokens), IDS)
    ctx.grad_outer("table", onehot, de, f"through the lookup: one-hot · (∂L/∂{ctx.stage.name})ᵀ")
    return [None]


def position_embedding_backward(ctx, dp):
    """p[:, t] = wpe[t]: wpe's gradient is ∂L/∂p[:, t] in row t, for the T positions of the window; 0 beyond."""
    T = ctx.T

    def fill(tab, rect, transposed):
        if transposed:  # [features, positions]
            tab.array(rect.cols(0, T), "{d}", d=dp)
            return tab.put(rect.cols(T, rect.width), [[0] * (rect.width - T)] * rect.height) if rect.width > T else rect
        tab.array(rect.rows(0, T), "TRANSPOSE({d})", d=dp)
        return tab.put(rect.rows(T, rect.height), [[0] * rect.width] * (rect.height - T)) if rect.height > T else rect

    ctx.grad_fill("table", fill, f"∂L/∂{ctx.stage.name} at rows 0 … {T - 1} (the window's positions), 0 beyond")
    return []
