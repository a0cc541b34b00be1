"""The loss a training book minimizes: next-token cross-entropy at every position of the window."""
from .. import contract as C
from ..xlsx.styles import BIG, BOLD, IDS, INPUT
from .output import softmax_stats


def cross_entropy(ctx, logits):
    """loss_t = log Σ_v exp(logit[v, t]) − logit[target_t, t] = −log p(target_t); Loss = the mean over the T
    positions. The target of position t is the token at t + 1."""
    tab, training = ctx.tab, ctx.lowering.training
    loss = tab.tall(tab.field("Loss: the mean of the positions' losses", None, BIG), 30)
    tab.skip()
    targets = ctx.block([("target token id", None)], "Targets: the token that follows each position")
    tab.format(tab.put(targets, [list(training.targets)], INPUT), IDS)
    ctx.name(C.TARGETS, targets)
    if ctx.vocab is not None:
        ctx.each(tab.line("target token", ctx.T), "INDEX({vocab},{y}+1)", BOLD, vocab=C.VOCABULARY,
                 y=lambda _, t: targets.cell(0, t))
        tab.skip()
    mx, total = softmax_stats(ctx, logits, "Each column's largest logit and sum of exp(logit − largest)")
    per_position = ctx.block([("loss", None)], "Loss at each position: log(sum of exp(logit − largest)) + largest "
                                               "− logit of the target = −log p(target)")
    ctx.each(per_position, "LN({s})+{mx}-INDEX({l},{y}+1)", s=lambda _, t: total.col(t), mx=lambda _, t: mx.col(t),
             l=lambda _, t: logits.col(t), y=lambda _, t: targets.cell(0, t))
    tab.put(loss, [[ctx.formula(f"AVERAGE({per_position.ref(tab.name)})")]], BIG)
    ctx.name(C.LOSS, loss)
    from ..compile.backward import settings
    settings(tab, training, ctx.lowering.named)
    ctx.save(max=mx, total=total, targets=targets)
    return per_position


def cross_entropy_backward(ctx, _, logits):
    """∂L/∂logit[v, t] = (p[v, t] − [v = target_t]) / T: the softmax minus the one-hot target, averaged."""
    labels = [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * logits.height)]
    d = ctx.block(labels, f"∂L/∂{ctx.input_name(0)} = (softmax − one-hot of the target) / {ctx.T}")
    return [ctx.array(d, "(EXP({l}-{mx})/{s}-IF({ids}={y},1,0))/{T}", l=logits, mx=ctx.saved["max"],
                      s=ctx.saved["total"], ids=d.index_column(), y=ctx.saved["targets"], T=ctx.T)]
