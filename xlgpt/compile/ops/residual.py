"""The residual stream: each sublayer's output is added to x."""


def add(ctx, a, b):
    """y = a + b."""
    out = ctx.block(ctx.rows(ctx.stage.name, a.height))
    return ctx.array(out, "{a}+{b}", a=a, b=b)


def add_backward(ctx, dy, a, b):
    """y = a + b: both inputs receive ∂L/∂y unchanged (no cells: their readers read it where it is)."""
    return [dy, dy]
