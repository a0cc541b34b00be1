"""Pass 2b, for a training book: reverse-mode differentiation of the lowered forward pass, as cells.

The stages are walked from the loss back to the tokens; each op's backward (beside its forward in xlgpt/ops/)
turns ∂L/∂output into ∂L/∂inputs and its parameters' gradients, as blocks on "<tab> backward" tabs. A value
read by several stages (the residual stream) gets their gradients summed in a block of its own; wte gets its
two paths (lookup and LM head) summed on its gradients tab. Then the optimizer: every tensor's gradient, its
updated value, and Adam's moments sit on tabs laid out exactly like its weights tab, so the step is a copy of
the "updated" tab over the weights tab (xlgpt train does that copy-paste epoch).
"""

from dataclasses import astuple, dataclass

import numpy as np

from xlgpt.compile.context import TRANSPOSED, Ctx, Stored
from xlgpt.compile.ops import OPS
from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C
from xlgpt.sheet.layout import BOLD, Named, Rect, Tab
from xlgpt.sheet.styles import IDS, SCIENTIFIC


@dataclass(frozen=True)
class Training:
    """What a training book needs besides the model: the window's targets and the optimizer's settings."""

    targets: list
    optimizer: str = "sgd"  # or "adamw"
    learning_rate: float = 0.1
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step: int = 1  # Adam's t for this update (1 for the first)
    moments: dict = None  # Adam's {"m": {tensor: array}, "v": {...}} so far (default: zeros)
    history: list = ()  # the loss of each step so far (xlgpt train), shown with a chart

    def settings(self):
        return {
            C.LEARNING_RATE: self.learning_rate,
            C.WEIGHT_DECAY: self.weight_decay,
            C.ADAM_BETA1: self.beta1,
            C.ADAM_BETA2: self.beta2,
            C.ADAM_EPS: self.eps,
            C.ADAM_STEP: self.step,
        }


class Switch:
    """A head's switch, where the book has HeadSwitches: its factor in a backward formula, and a note."""

    def __init__(self, switches, layer, tab):
        self.switches, self.layer, self.tab = switches, layer, tab
        self.note = " (times the head's switch)" if switches else ""

    def times(self, h):
        return f"*{self.switches.cell(self.layer, h).ref(self.tab)}" if self.switches else ""


class BackCtx(Ctx):
    """An op's backward sees what its forward saw, on the "<tab> backward" tab: plus its forward output
    (`out`), what the forward saved, and ways to hand over its parameters' gradients."""

    def __init__(self, lowering, stage, out):
        super().__init__(lowering, stage)
        self.tab = lowering.backward_tab(stage.tab, own=OPS[stage.op].group == "training")
        self.header = lowering.headers[self.tab.name]
        self.positions, self.token_ids = self.header.positions, self.header.ids
        self.out, self.saved = out[stage.index], lowering.saved.get((self.run, stage.index), {})
        self.head_switch = Switch(lowering.named.get(C.HEAD_SWITCHES), stage.layer, self.tab.name)

    def block(self, labels, title=None, width=None):
        """As Ctx.block, in scientific notation: gradients span many orders of magnitude."""
        return self.tab.format(super().block(labels, title, width), SCIENTIFIC)

    def input_name(self, i):
        return self.lowering.spec.stages[self.stage.inputs[i]].name

    def grad_fill(self, role, fill, how):
        """A contribution to a parameter's gradient: fill(tab, rect, transposed) writes it into `rect`, laid out
        as the weights tab stores the tensor."""
        tensor = self.stage.params[role]
        self.lowering.param_grads.setdefault(tensor, []).append((self, f"∂L/∂{tensor} = {how}", fill))

    def grad_outer(self, role, a, b, how):
        """∂L/∂W = a·bᵀ, summed over the positions (a: rows of W x T, b: columns of W x T)."""

        def fill(tab, rect, transposed):
            x, y = (b, a) if transposed else (a, b)
            return tab.array(rect, "MMULT({a},TRANSPOSE({b}))", a=x, b=y)

        self.grad_fill(role, fill, how)

    def grad_rows(self, role, template, how, **blocks):
        """A vector's gradient, one formula per entry i reading row i of each block: SUM of one block or
        SUMPRODUCT of two, the sum over positions of their product either way."""

        def fill(tab, rect, _):
            return tab.each(rect, template, **{k: (lambda i, _, b=b: b.row(i)) for k, b in blocks.items()})

        self.grad_fill(role, fill, how)


def backward(lowering, stages=None, out=None, grads=None, until=0):
    """Walk the stages from the loss back (default: the spec's, the loss last; else `stages` of a run whose outputs
    are `out`, from `grads`: {stage index: [(what, ∂L/∂output)]}), accumulating each stage's ∂L/∂output from the
    stages that read it, down to the stage of index `until`. Returns {stage index: ∂L/∂output}."""
    stages = stages or lowering.spec.stages
    out = out or lowering.out
    grads = grads or {stages[-1].index: [(None, None)]}  # the loss: its backward needs no incoming gradient
    douts = {}
    for stage in reversed(stages):
        if stage.index not in grads or stage.index < until:
            continue  # not on the way to the loss
        op = OPS[stage.op]
        if op.backward is None:
            raise XlgptError(
                f"template: op {stage.op!r} (stage '{stage.name}') has no backward, so a training book cannot use it"
            )
        ctx = BackCtx(lowering, stage, out)
        dout = douts[stage.index] = total(ctx, grads.pop(stage.index))
        inputs = [out[i] for i in stage.inputs]
        for i, d in zip(stage.inputs, op.backward(ctx, dout, *inputs)):
            if d is not None:
                grads.setdefault(i, []).append(("the residual add" if stage.op == "add" else stage.name, d))
    return douts


def total(ctx, handed):
    """∂L/∂(this stage's output): the one gradient handed back, or the sum of several in a block of their own.
    `handed`: (reader's name, part); a part is a block, a list of per-head blocks, or {first row: block} pieces
    of the rows (q, k and v)."""
    readers, parts = zip(*handed)
    if len(parts) == 1 and not isinstance(parts[0], dict):
        return parts[0]
    if any(isinstance(p, list) for p in parts):
        raise XlgptError(f"template: per-head stage '{ctx.stage.name}' is read by more than one stage")
    height, name = ctx.out.height, ctx.stage.name
    out = ctx.block(
        ctx.rows(f"∂L/∂{name}", height),
        f"∂L/∂{name} = " + " + ".join(f"∂L/∂{name} through {r}" for r in readers)
        if not all(isinstance(p, dict) for p in parts)
        else f"∂L/∂{name}: its rows gathered from the stages that read them ({', '.join(readers)})",
    )
    pieces = [p if isinstance(p, dict) else {0: p} for p in parts]
    edges = {edge for p in pieces for start, rect in p.items() for edge in (start, start + rect.height)}
    cuts = sorted({0, height} | edges)
    for lo, hi in zip(cuts, cuts[1:]):
        terms = [
            rect.rows(lo - start, hi - start)
            for p in pieces
            for start, rect in p.items()
            if start <= lo and hi <= start + rect.height
        ]
        ctx.array(
            out.rows(lo, hi),
            "+".join("{t%d}" % k for k in range(len(terms))) or "0",
            **{f"t{k}": t for k, t in enumerate(terms)},
        )
    return out


# --- the optimizer's tabs: each laid out exactly like its weights tab -----------------------------------

MIRRORS = {  # kind -> (tab suffix, defined name prefix, what its titles say)
    "gradients": ("gradients", C.GRADIENT, "∂L/∂{t}"),
    "m": ("Adam m", C.ADAM_M, "Adam's first moment m of {t}, before this step"),
    "v": ("Adam v", C.ADAM_V, "Adam's second moment v of {t}, before this step"),
    "new m": ("new m", C.NEW_ADAM_M, "m ← AdamBeta1 · m + (1 − AdamBeta1) · ∂L/∂{t}"),
    "new v": ("new v", C.NEW_ADAM_V, "v ← AdamBeta2 · v + (1 − AdamBeta2) · (∂L/∂{t})²"),
    "updated": ("updated", C.UPDATED, "{t} after the step: {rule}"),
}
RULES = {
    "sgd": "w − LearningRate · ∂L/∂w",
    "adamw": "w·(1 − LearningRate·WeightDecay) − LearningRate · m̂ / (sqrt(v̂) + AdamEps), "
    "m̂ = m/(1 − AdamBeta1^AdamStep), v̂ = v/(1 − AdamBeta2^AdamStep)",
}
UPDATE = {
    "sgd": "{w}-LearningRate*{g}",
    "adamw": "{w}*(1-LearningRate*WeightDecay)-LearningRate*({m}/(1-AdamBeta1^AdamStep))"
    "/(SQRT({v}/(1-AdamBeta2^AdamStep))+AdamEps)",
}


def optimizer(lowering, training):
    """Gradients (the sum of each tensor's contributions), then the optimizer's step, tab by weights tab."""
    kinds = ["gradients"] + (["m", "v", "new m", "new v"] if training.optimizer == "adamw" else []) + ["updated"]
    weights_tabs = [t for t in lowering.book.tabs.values() if t.group == "weights"]
    mirrors = {
        (w.name, kind): lowering.book.add(
            Tab(
                w.name.replace(" weights", " " + MIRRORS[kind][0]),
                w.name.replace(" weights", " " + MIRRORS[kind][0]),
                "optimizer",
            )
        )
        for kind in kinds
        for w in weights_tabs
    }
    for tensor, placed in lowering.placed.items():
        stored = placed if isinstance(placed, Stored) else Stored(placed, False)
        weight = stored.rect

        def at(kind):  # the tensor's cells on one of its weights tab's mirrors: titled, indexed and named
            tab = mirrors[weight.sheet, kind]
            suffix, prefix, title = MIRRORS[kind]
            title = title.format(t=tensor, rule=RULES[training.optimizer])
            rect = Rect(tab.name, weight.top, weight.left, weight.height, weight.width)
            if isinstance(placed, Stored):  # as on the weights tab: title, then column indices, row indices
                tab.put(Rect(tab.name, weight.top - 2, 1), [[title + (TRANSPOSED if stored.transposed else "")]], BOLD)
                tab.numbers(rect.row(0).rows(-1, 0), np.arange(weight.width)[None, :])
                tab.put(rect.index_column(), [[i] for i in range(weight.height)], IDS)  # not in the row's format
            else:  # a vector's title tops its column
                tab.put(Rect(tab.name, 3, weight.left), [[title]], BOLD)
            if kind == "gradients":
                tab.format(rect, SCIENTIFIC)
            lowering.named[prefix + weight.name] = rect
            return tab, rect, Named(*astuple(rect), prefix + weight.name)  # cells to fill; a name to read them by

        tab, grad, grad_name = at("gradients")
        parts = lowering.param_grads.get(tensor)
        if not parts:
            raise XlgptError(f"template: {tensor} is not on the way to the loss, so it has no gradient")
        if len(parts) == 1:
            ctx, how, fill = parts[0]
            fill(tab, grad, stored.transposed)
        else:  # each path on its backward tab, their sum on the gradients tab
            paths = {}
            for k, (ctx, how, fill) in enumerate(parts):
                paths[f"p{k}"] = ctx.tab.block([(None, i) for i in range(weight.height)], weight.width, how)
                fill(ctx.tab, paths[f"p{k}"], stored.transposed)
            tab.array(grad, "+".join("{%s}" % k for k in paths), **paths)
        refs = {"w": weight, "g": grad_name}
        if training.optimizer == "adamw":
            for kind, rule in (
                ("m", "AdamBeta1*{state}+(1-AdamBeta1)*{g}"),
                ("v", "AdamBeta2*{state}+(1-AdamBeta2)*{g}^2"),
            ):
                state_tab, state, state_name = at(kind)
                value = (training.moments or {}).get(kind, {}).get(tensor, np.zeros(lowering.ckpt[tensor].shape))
                held = value.T if stored.transposed else value.reshape(weight.height, weight.width)
                state_tab.numbers(state, held)
                new_tab, new, refs[kind] = at("new " + kind)
                new_tab.array(new, rule, state=state_name, g=grad_name)
        tab, updated, _ = at("updated")
        tab.array(updated, UPDATE[training.optimizer], **refs)
