"""The loss a training book minimizes: next-token cross-entropy at every position of the window."""

from xlgpt.compile.ops.output import softmax_stats
from xlgpt.sheet import contract as C
from xlgpt.sheet.layout import Rect
from xlgpt.sheet.styles import BIG_NUMBER, BOLD, IDS, INPUT, NUMBER


def cross_entropy(ctx, logits):
    """loss_t = log Σ_v exp(logit[v, t]) − logit[target_t, t] = −log p(target_t); Loss = the mean over the T
    positions. The target of position t is the token at t + 1."""
    tab, training = ctx.tab, ctx.lowering.training
    loss = tab.widen(tab.tall(tab.field("Loss: the mean of the positions' losses", None, BIG_NUMBER), 30), 12)
    tab.skip()
    if training.history:
        tab.note(
            "The Loss above is that of the weights as they are now, after the history's last step; each step's "
            "loss below was taken before that step's update."
        )
        loss_history(ctx, training.history)
    rows = [("target token id", None)] + ([("target token", None)] if ctx.vocab is not None else [])
    block = ctx.block(rows, "Targets: the token that follows each position")
    targets = tab.format(tab.put(block.row(0), [list(training.targets)], INPUT), IDS)
    ctx.name(C.TARGETS, targets)
    if ctx.vocab is not None:
        ctx.each(block.row(1), "INDEX({vocab},{y}+1)", BOLD, vocab=C.VOCABULARY, y=lambda _, t: targets.cell(0, t))
    mx, total = softmax_stats(ctx, logits, "Each column's largest logit and sum of exp(logit − largest)")
    per_position = ctx.block(
        [("loss", None)],
        "Loss at each position: log(sum of exp(logit − largest)) + largest − logit of the target = −log p(target)",
    )
    ctx.each(
        per_position,
        "LN({s})+{mx}-INDEX({l},{y}+1)",
        s=lambda _, t: total.col(t),
        mx=lambda _, t: mx.col(t),
        l=lambda _, t: logits.col(t),
        y=lambda _, t: targets.cell(0, t),
    )
    tab.put(loss, [[ctx.formula(f"AVERAGE({per_position.ref(tab.name)})")]], BIG_NUMBER)
    ctx.name(C.LOSS, loss)
    settings(tab, training, ctx.lowering.named)
    ctx.save(max=mx, total=total, targets=targets)
    return per_position


def cross_entropy_backward(ctx, _, logits):
    """∂L/∂logit[v, t] = (p[v, t] − [v = target_t]) / T: the softmax minus the one-hot target, averaged."""
    labels = [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * logits.height)]
    d = ctx.block(labels, f"∂L/∂{ctx.input_name(0)} = (softmax − one-hot of the target) / {ctx.T}")
    ctx.array(
        d,
        "(EXP({l}-{mx})/{s}-IF({ids}={y},1,0))/{T}",
        l=logits,
        mx=ctx.saved["max"],
        s=ctx.saved["total"],
        ids=d.index_column(),
        y=ctx.saved["targets"],
        T=ctx.T,
    )
    return [d]


CHART_ROWS, CHART_COLUMNS = 18, 9


def loss_history(ctx, losses):
    """The loss of each step xlgpt train took (LossHistory), and a line chart of it beside the table."""
    tab = ctx.tab
    tab.title("Loss history: the loss of each step of xlgpt train, before that step's update")
    history = tab.block([("step", k + 1) for k in range(len(losses))], 1)
    tab.format(tab.put(history, [[float(x)] for x in losses]), NUMBER)
    ctx.name(C.LOSS_HISTORY, history)
    chart = Rect(tab.name, history.top, history.right + 2, CHART_ROWS, CHART_COLUMNS)
    tab.chart("Training loss", history.index_column(), history, chart, "step", "loss (nats per token)")
    tab.skip(max(0, CHART_ROWS - len(losses)))


def settings(tab, training, named):
    """The optimizer's cells, on the Loss tab: the update tabs read them by name."""
    tab.title(
        f"The optimizer's step ({training.optimizer}): the 'updated' tabs read these cells by name; "
        f"edit a yellow one and recalculate"
    )
    named[C.OPTIMIZER] = tab.field(C.OPTIMIZER, training.optimizer, BOLD)
    for name, value in training.settings().items():
        if training.optimizer == "sgd" and name != C.LEARNING_RATE:
            continue  # SGD is w − lr·grad, nothing more
        named[name] = tab.field(name, value, INPUT)
    tab.skip()
