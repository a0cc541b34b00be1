"""Brain surgery: switch cells that scale each head and each MLP, and a steering vector added to the
residual stream entering one block. The cells sit on the Interventions tab; the layer tabs multiply and add
them where it happens, by name."""

from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import BOLD, INPUT

FIT = 70  # characters a row of the tab's notes holds: the width of its columns A to F


def steer(ctx, x):
    """x + SteeringCoefficient · SteeringVector at every position, when SteeringLayer is this block."""
    out = ctx.block(ctx.rows("x", x.height))
    return ctx.array(
        out,
        "{x}+IF({layer}={here},{coefficient},0)*{vector}",
        x=x,
        here=ctx.stage.layer,
        layer=ctx.named(C.STEERING_LAYER),
        coefficient=ctx.named(C.STEERING_COEFFICIENT),
        vector=ctx.named(C.STEERING_VECTOR),
    )


def steer_backward(ctx, dy, x):
    """y = x + c·v: ∂L/∂x = ∂L/∂y."""
    return [dy]


def mlp_switch(ctx, mlp_out):
    """y = mlp_out · MlpSwitches[layer]: 1 keeps the MLP, 0 ablates it, 0.5 halves it."""
    out = ctx.block(ctx.rows(ctx.stage.name, mlp_out.height))
    return ctx.array(out, "{m}*{switch}", m=mlp_out, switch=ctx.named(C.MLP_SWITCHES).cell(ctx.stage.layer, 0))


def mlp_switch_backward(ctx, dy, mlp_out):
    """y = mlp_out · switch: ∂L/∂mlp_out = ∂L/∂y · switch."""
    d = ctx.block(ctx.rows(f"∂L/∂{ctx.input_name(0)}", dy.height), f"∂L/∂{ctx.input_name(0)} = ∂L/∂y · MlpSwitches")
    return [ctx.array(d, "{dy}*{switch}", dy=dy, switch=ctx.named(C.MLP_SWITCHES).cell(ctx.stage.layer, 0))]


def panel(ctx):
    """The cells a person edits: a switch per head and per MLP (default 1), and the steering vector with its
    layer and coefficient (default 0: no steering)."""
    cfg, edits, tab = ctx.cfg, ctx.edits, ctx.tab
    fit = FIT
    tab.note(
        "Edit a yellow cell, then recalculate (F9; Ctrl+Alt+F9 in Excel, Ctrl+Shift+F9 in LibreOffice). "
        "Every layer tab reads these cells by name.",
        gap=1,
        fit=fit,
    )
    tab.title("Head switches (HeadSwitches)")
    tab.note("Each multiplies its head's output before the output projection: 1 keeps it, 0 ablates it.", fit=fit)
    tab.put(tab.line("", cfg.n_head), [[f"head {h}" for h in range(cfg.n_head)]], BOLD)
    heads = tab.block([(f"layer {i}", None) for i in range(cfg.n_layer)], cfg.n_head)
    tab.put(heads, edits.head_switches.tolist(), INPUT)
    tab.title("MLP switches (MlpSwitches)")
    tab.note("Each multiplies its MLP's output before it joins the residual stream.", fit=fit)
    mlps = tab.block([(f"layer {i}", None) for i in range(cfg.n_layer)], 1)
    tab.put(mlps, [[v] for v in edits.mlp_switches.tolist()], INPUT)
    tab.title("Steering")
    tab.note(
        "SteeringCoefficient × SteeringVector is added to the residual stream entering block SteeringLayer, at "
        "every position (0: no steering).",
        fit=fit,
    )
    layer = tab.field(f"SteeringLayer (0 … {cfg.n_layer - 1})", edits.steering_layer, INPUT)
    coefficient = tab.field("SteeringCoefficient", edits.steering_coefficient, INPUT)
    # one cell: eval takes any text after "SteeringVector: " (where the build took the vector from)
    tab.note(f"SteeringVector: {edits.source}", gap=0)
    vector = tab.block(ctx.rows("feature", cfg.n_embd), 1)
    tab.put(vector, [[v] for v in edits.steering_vector.tolist()], INPUT)
    for name, rect in (
        (C.HEAD_SWITCHES, heads),
        (C.MLP_SWITCHES, mlps),
        (C.STEERING_LAYER, layer),
        (C.STEERING_COEFFICIENT, coefficient),
        (C.STEERING_VECTOR, vector),
    ):
        ctx.name(name, rect)
    tab.widen(heads, 9)
    return heads
