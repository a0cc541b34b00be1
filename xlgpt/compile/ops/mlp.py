"""The MLP's nonlinearity."""


def gelu(ctx, x):
    """GELU, tanh approximation: 0.5·h·(1 + tanh(sqrt(2/π)·(h + 0.044715·h³)))."""
    out = ctx.block(ctx.rows(ctx.stage.name, x.height))
    return ctx.array(out, "0.5*{h}*(1+TANH(SQRT(2/PI())*({h}+0.044715*{h}^3)))", h=x)


def gelu_backward(ctx, dy, h):
    """∂L/∂h = ∂L/∂y · GELU'(h), with
    GELU'(h) = 0.5·(1 + tanh u) + 0.5·h·(1 − tanh² u)·sqrt(2/π)·(1 + 3·0.044715·h²),
    u = sqrt(2/π)·(h + 0.044715·h³)."""
    name = ctx.input_name(0)
    dh = ctx.block(
        ctx.rows(f"∂L/∂{name}", h.height),
        f"∂L/∂{name} = ∂L/∂{ctx.stage.name} · (0.5·(1 + tanh u) + "
        f"0.5·h·(1 − tanh² u)·sqrt(2/π)·(1 + 0.134145·h²)), u = sqrt(2/π)·(h + 0.044715·h³)",
    )
    u = "TANH(SQRT(2/PI())*({h}+0.044715*{h}^3))"
    ctx.array(dh, f"{{dy}}*(0.5*(1+{u})+0.5*{{h}}*(1-{u}^2)*SQRT(2/PI())*(1+0.134145*{{h}}^2))", dy=dy, h=h)
    return [dh]
