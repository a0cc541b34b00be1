"""Linear layers. GPT-2's Conv1D weights are [in, out]: y = Wᵀ·x + b with positions as columns."""


def linear(ctx, x):
    """y = Wᵀ·x + b. A weight kept as the checkpoint holds it ([in, out]) is read as (xᵀ·W)ᵀ: transposing the
    positions' columns, not the matrix, which LibreOffice would copy at every evaluation (2.5× the MMULT's time)."""
    w, b = ctx.weight("weight"), ctx.weight("bias")
    out = ctx.block(ctx.rows(ctx.stage.name, b.height))
    if w.transposed:
        return ctx.product(out, "MMULT({wt},{x})+{b}", "0*{b}", wt=ctx.transposed(w), x=x, b=b)
    return ctx.product(out, "TRANSPOSE(MMULT(TRANSPOSE({x}),{w}))+{b}", "0*{b}", w=ctx.as_is(w), x=x, b=b)


def qkv(ctx, x):
    """[q; k; v] = c_attnᵀ·x + b: the queries, keys and values of every head, in that order (GPT-2's
    c_attn), each split into heads of head_size rows."""
    w, b = ctx.weight("weight"), ctx.weight("bias")
    d = ctx.cfg.head_size
    labels = [(f"{part} head {h}", i) for part in "qkv" for h in range(ctx.cfg.n_head) for i in range(d)]
    return ctx.product(ctx.block(labels), "MMULT({wt},{x})+{b}", "0*{b}", wt=ctx.transposed(w), x=x, b=b)


def linear_backward(ctx, dy, x):
    """y = Wᵀ·x + b: ∂L/∂x = W·∂L/∂y, ∂L/∂W = x·(∂L/∂y)ᵀ (summed over positions), ∂L/∂b = Σ_t ∂L/∂y."""
    y, name, w = ctx.stage.name, ctx.input_name(0), ctx.stage.params["weight"]
    dx = ctx.block(ctx.rows(f"∂L/∂{name}", x.height), f"∂L/∂{name} = {w} · ∂L/∂{y}")
    ctx.array(dx, "MMULT({w},{dy})", w=ctx.as_is(ctx.weight("weight")), dy=dy)
    ctx.grad_outer("weight", x, dy, f"{name} · (∂L/∂{y})ᵀ, summed over positions")
    ctx.grad_rows("bias", "SUM({dy})", f"Σ over positions of ∂L/∂{y}", dy=dy)
    return [dx]


def head(qkv, part, h, cfg):
    """Rows of head h's queries (part 0), keys (1) or values (2) in the qkv block (a Rect, or its values)."""
    start = part * cfg.n_embd + h * cfg.head_size
    return qkv[start : start + cfg.head_size] if hasattr(qkv, "ndim") else qkv.rows(start, start + cfg.head_size)
