"""LayerNorm over the features of each position."""
def normalize(ctx, x, g, b, name, title):
    """(x - mean) / sqrt(variance + eps) · g + b, each column's mean and variance shown above it."""
    stats = ctx.block([("mean", None), ("variance", None)], title + ": mean and variance of each column")
    mean, var = stats.row(0), stats.row(1)
    ctx.each(mean, "AVERAGE({x})", x=lambda _, t: x.col(t))
    ctx.each(var, "SUMPRODUCT(({x}-{mean})^2)/{n}", x=lambda _, t: x.col(t), mean=lambda _, t: mean.col(t), n=x.height)
    out = ctx.block(ctx.rows(name, x.height), title + ": (x - mean) / sqrt(variance + eps) · weight + bias")
    return ctx.array(out, "({x}-{mean})/SQRT({var}+{eps})*{g}+{b}", x=x, mean=mean, var=var,
                     eps=ctx.number(ctx.cfg.layer_norm_epsilon), g=g, b=b)


def layernorm(ctx, x):
    """y = (x - mean) / sqrt(variance + eps) · weight + bias, mean and variance over each column."""
    return normalize(ctx, x, ctx.weight("weight"), ctx.weight("bias"), ctx.stage.name, ctx.title)
