"""The MLP's nonlinearity."""


def gelu(ctx, x):
    """GELU, tanh approximation: 0.5·h·(1 + tanh(sqrt(2/π)·(h + 0.044715·h³)))."""
    out = ctx.block(ctx.rows(ctx.stage.name, x.height))
    return ctx.array(out, "0.5*{h}*(1+TANH(SQRT(2/PI())*({h}+0.044715*{h}^3)))", h=x)
