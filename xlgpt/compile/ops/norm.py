"""LayerNorm over the features of each position."""


def normalize(ctx, x, g, b, name, title):
    """(x - mean) / sqrt(variance + eps) · g + b, each column's mean and variance shown above it."""
    stats = ctx.block([("mean", None), ("variance", None)], title + ": mean and variance of each column", x.width)
    mean, var = stats.row(0), stats.row(1)
    ctx.each(mean, "AVERAGE({x})", x=lambda _, t: x.col(t))
    ctx.each(var, "SUMPRODUCT(({x}-{mean})^2)/{n}", x=lambda _, t: x.col(t), mean=lambda _, t: mean.col(t), n=x.height)
    ctx.save(mean=mean, var=var)
    out = ctx.block(ctx.rows(name, x.height), title + ": (x - mean) / sqrt(variance + eps) · weight + bias", x.width)
    ctx.array(
        out,
        "({x}-{mean})/SQRT({var}+{eps})*{g}+{b}",
        x=x,
        mean=mean,
        var=var,
        eps=ctx.number(ctx.cfg.layer_norm_epsilon),
        g=g,
        b=b,
    )
    return out


def layernorm(ctx, x):
    """y = (x - mean) / sqrt(variance + eps) · weight + bias, mean and variance over each column."""
    return normalize(ctx, x, ctx.weight("weight"), ctx.weight("bias"), ctx.stage.name, ctx.title)


def layernorm_backward(ctx, dy, x):
    """With x̂ = (x − mean)/σ, σ = sqrt(variance + eps), and dx̂ = dy · weight: ∂L/∂weight = Σ_t dy · x̂,
    ∂L/∂bias = Σ_t dy, ∂L/∂x = (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)) / σ, the means over each column's features."""
    y, n, eps = ctx.stage.name, x.height, ctx.number(ctx.cfg.layer_norm_epsilon)
    mean, var = ctx.saved["mean"], ctx.saved["var"]
    xhat = ctx.block(ctx.rows("x̂", n), f"{y}: x̂ = (x − mean) / sqrt(variance + eps), from the forward pass")
    ctx.array(xhat, "({x}-{mean})/SQRT({var}+{eps})", x=x, mean=mean, var=var, eps=eps)
    dxhat = ctx.block(ctx.rows("∂L/∂x̂", n), f"∂L/∂x̂ = ∂L/∂{y} · {ctx.stage.params['weight']}")
    ctx.array(dxhat, "{dy}*{g}", dy=dy, g=ctx.weight("weight"))
    stats = ctx.block(
        [("mean of ∂L/∂x̂", None), ("mean of ∂L/∂x̂ · x̂", None)],
        "The two means over each column's features that LayerNorm's gradient subtracts",
    )
    ctx.each(stats.row(0), "AVERAGE({d})", d=lambda _, t: dxhat.col(t))
    ctx.each(
        stats.row(1), "SUMPRODUCT({d},{xhat})/{n}", d=lambda _, t: dxhat.col(t), xhat=lambda _, t: xhat.col(t), n=n
    )
    dx = ctx.block(
        ctx.rows(f"∂L/∂{ctx.input_name(0)}", n),
        f"∂L/∂{ctx.input_name(0)} = (∂L/∂x̂ − mean(∂L/∂x̂) − x̂ · mean(∂L/∂x̂ · x̂)) / sqrt(variance + eps)",
    )
    ctx.array(
        dx,
        "({d}-{m}-{xhat}*{mx})/SQRT({var}+{eps})",
        d=dxhat,
        m=stats.row(0),
        xhat=xhat,
        mx=stats.row(1),
        var=var,
        eps=eps,
    )
    ctx.grad_rows("weight", "SUMPRODUCT({dy},{xhat})", f"Σ over positions of ∂L/∂{y} · x̂", dy=dy, xhat=xhat)
    ctx.grad_rows("bias", "SUM({dy})", f"Σ over positions of ∂L/∂{y}", dy=dy)
    return [dx]
