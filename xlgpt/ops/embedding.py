"""The input and its embedding: x[:, t] = wte[token t] + wpe[t]."""


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
    return ctx.each(out, "LOOKUP({token},{ids},{w})", ids=table.index_column(), w=lambda i, t: table.col(i),
                    token=lambda i, t: tokens.cell(0, t))


def position_embedding(ctx):
    """p[i, t] = wpe[t, i]: the first T rows of wpe, as columns."""
    if ctx.T > ctx.cfg.n_positions:
        ctx.fail(f"{ctx.T} tokens exceed the model's context of {ctx.cfg.n_positions}")
    table = ctx.weight("table")
    out = ctx.block(ctx.rows("feature", ctx.cfg.n_embd))
    for t in range(ctx.T):  # position t's row of wpe, as column t
        ctx.array(out.col(t), "{p}", p=ctx.transposed(table, rows=(t, t + 1)))
    return out
