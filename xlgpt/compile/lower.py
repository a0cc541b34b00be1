"""Pass 2: lower a spec, a checkpoint and the inputs into a Book of tabs, running each stage's op.

Computation tabs put token positions in columns and features in rows, under a frozen header (position,
token id, its text, and in a prompt-cell book whether the position holds the prompt or padding). Each op
(xlgpt/ops/) turns into a few classic array formulas ({=MMULT(...)}) or one small formula per cell where a
person should see a single step (LayerNorm statistics, softmax maxima and sums, the embedding lookup).
"""

from dataclasses import astuple, replace

from xlgpt.compile.backward import BackCtx, backward, optimizer
from xlgpt.compile.context import TRANSPOSED, Ctx, Header, Stored
from xlgpt.compile.guide import add_guide
from xlgpt.compile.inputs import Edits, TokenIds
from xlgpt.compile.ops import OPS, patching
from xlgpt.compile.template import Stage
from xlgpt.compile.values import FormulaValues
from xlgpt.package import XlgptError, __version__
from xlgpt.sheet import contract as C
from xlgpt.sheet.layout import BOLD, Book, Named, Tab, WeightsTab

PATCHING_TAB = "Patching"


class Lowering:
    def __init__(
        self, spec, ckpt, inputs, vocab=None, edits=None, sae=None, training=None, values=True, lens_at_last=False
    ):
        self.spec, self.ckpt, self.cfg, self.inputs, self.vocab = spec, ckpt, ckpt.config, inputs, vocab
        self.edits, self.sae, self.training, self.lens_at_last = edits, sae, training, lens_at_last
        self.saved, self.param_grads = {}, {}  # a training book's: blocks each backward reads, gradient contributions
        self.T = inputs.positions
        self.book = Book()
        self.placed, self.out, self.header_slots, self.headers, self.named, self.onehots = {}, {}, {}, {}, {}, {}
        if values:  # every formula cell gets the value it computes, from the constants (weights, inputs) up
            self.book.formula_values = FormulaValues(self.book, self.named)
        self.vocabulary = None
        self.inputs_tab = spec.stages[0].tab
        self.run_name = None  # the run being lowered: None (the clean one), or one of contract.RUNS
        for name in spec.tabs():
            self.add_tab(name, name)

    def add_tab(self, name, template_tab, ids_from=None):
        """A tab for the template's `template_tab`, its header's ids copied from `ids_from` (default: the inputs
        tab's)."""
        op = OPS[next(s.op for s in self.spec.stages if s.tab == template_tab)]
        tab = self.book.add(Tab(name, name, op.group))
        if op.header:
            self.headers[name] = self.header(tab, ids_from or self.inputs_tab)
        else:
            tab.skip()

    def header(self, tab, ids_from):
        """The frozen header: positions, token ids (the input itself on the inputs tab, a copy elsewhere),
        their texts, whether each position is prompt or padding, then the header stages' result rows."""
        T, first = self.T, tab.name == self.inputs_tab
        positions = tab.put(tab.header("position", T), [list(range(T))], style=BOLD)
        ids = tab.header("token id", T)
        text = tab.header("token", T) if self.vocab is not None else None
        in_prompt = tab.header("in prompt (1) or padding (0)", T) if self.inputs.typed else None
        header = Header(positions, ids, text, in_prompt)
        if first:
            self.inputs.fill(tab, header)
        elif tab.name == PATCHING_TAB:
            TokenIds(self.inputs.contrast.corrupted).fill(tab, header)
        else:
            source = self.headers[ids_from]
            for mine, theirs in ((ids, source.ids), (text, source.text), (in_prompt, source.in_prompt)):
                if mine is not None:
                    tab.format(tab.array(mine, "{row}", row=theirs), BOLD)
        for stage in self.spec.stages:
            if stage.tab == tab.name and stage.header:
                row = tab.header(stage.title, T)
                self.header_slots[stage.index] = (
                    row,
                    tab.header(stage.title + " (text)", T) if self.vocab is not None else None,
                )
        tab.freeze()
        return header

    def backward_tab(self, tab, own=False):
        """The tab a stage's backward goes on: "<tab> backward" (made on first use, in reverse order of the
        forward tabs), or the stage's own tab (the loss's)."""
        name = tab if own else f"{tab} backward"
        if name not in self.book.tabs:
            ids_from = PATCHING_TAB if self.run_name else self.inputs_tab
            self.headers[name] = self.header(self.book.add(Tab(name, name, "training")), ids_from)
        return self.book[name]

    def weight(self, stage, role, labels=None, as_stored=False):
        """Place a tensor on the stage's weights tab on first use: a vector as a column (a Rect), a matrix
        with its shorter side across unless `as_stored` (Stored)."""
        tensor = stage.params[role]
        if tensor not in self.placed:
            tab = self.weights_tab(stage.tab)
            value = self.ckpt[tensor]
            if value.ndim == 1:
                self.placed[tensor] = self.named_weight(tab.vector(tensor, value), tensor)
            else:
                transposed = not as_stored and value.shape[0] < value.shape[1]
                title = tensor + (TRANSPOSED if transposed else "")
                rect = tab.matrix(title, value.T if transposed else value, labels)
                self.placed[tensor] = Stored(self.named_weight(rect, tensor, transposed), transposed)
        return self.placed[tensor]

    def named_weight(self, rect, tensor, transposed=False):
        """The tensor's cells with their defined name (e.g. L0_attn_c_attn_weight_T), which formulas read."""
        named = Named(*astuple(rect), C.weight_name(tensor, transposed))
        self.named[named.name] = rect
        return named

    def weights_tab(self, tab):
        name = f"{tab} weights"
        return self.book.tabs.get(name) or self.book.add(WeightsTab(name, self.cfg.n_embd))

    def run(self):
        self.run_stages(self.spec.stages, self.out)
        if self.inputs.contrast is not None:
            self.patching_runs()
        if self.training is not None:
            backward(self)
            optimizer(self, self.training)
        for name, header in self.headers.items():  # padding positions greyed, on every tab that has them
            if header.in_prompt is not None:
                self.book[name].grey_padding(header.in_prompt)

    def run_stages(self, stages, out):
        for stage in stages:
            inputs = [out[i] if isinstance(i, int) else [out[j] for j in i] for i in stage.inputs]
            out[stage.index] = OPS[stage.op].lower(Ctx(self, stage), *inputs)

    def patching_runs(self):
        """Activation patching (ops/patching.py): the Patching tab, then the model's stages (those the logits are
        computed from) again for the corrupted run and the patched run, each on tabs of its own (Corrupted
        Layer 0, ...) whose header copies the Patching tab's ids; then each run's logit difference."""
        self.add_tab(PATCHING_TAB, self.inputs_tab)
        panel = Ctx(self, Stage(-1, PATCHING_TAB, "patching", "patching", (), {}, "Activation patching"))
        patching.panel(panel, self.inputs.contrast)
        logits = self.spec.output(C.STAGE_OF[C.LOGITS]).index
        model = self.spec.ancestors(logits)
        logits_of, runs = {"clean": self.out[logits]}, {}
        for run in C.RUNS:
            self.run_name = run
            tabs = {tab: f"{run} {tab}" for tab in dict.fromkeys(stage.tab for stage in model)}
            tabs[self.inputs_tab] = PATCHING_TAB  # the runs' input: the corrupted ids in its header
            for tab, name in tabs.items():
                if name not in self.book.tabs:
                    self.add_tab(name, tab, PATCHING_TAB)
            stages, out = [replace(stage, tab=tabs[stage.tab]) for stage in model], {}
            self.run_stages(stages, out)
            runs[run], logits_of[run.lower()] = (stages, out), out[logits]
        self.run_name = None
        logit_diff = patching.metrics(panel, logits_of)
        patching.heatmaps(panel, self.inputs.contrast)
        patching.attribution(panel, self.attribution_terms(*runs[C.RUNS[0]], logits), logit_diff)

    def attribution_terms(self, stages, out, logits):
        """Attribution patching's backward pass: the corrupted run (`stages`, `out`) differentiated from
        ∂LogitDiff/∂logits down to the residual stream entering block 0, on its own backward tabs. Returns
        {component: [(∂LogitDiff/∂a, clean a, corrupted a) of each layer]} at the patch stages."""
        self.run_name = C.RUNS[0]
        at_logits = next(stage for stage in stages if stage.index == logits)
        start = patching.logit_diff_gradient(BackCtx(self, at_logits, out), out[logits])
        first = next(stage.index for stage in stages if stage.layer == 0)
        douts = backward(self, stages, out, {logits: [("LogitDiff", start)]}, until=first)
        self.run_name = None
        at = {}
        for stage in stages:
            if stage.op.startswith("patch_"):
                component = stage.op.removeprefix("patch_")
                at.setdefault(component, []).append((douts[stage.index], self.out[stage.index], out[stage.index]))
        return at

    def names(self):
        """The contract's names of the results (and of the vocabulary, when the book has token texts)."""
        out = {name: self.out[self.spec.output(stage).index] for name, stage in C.STAGE_OF.items()}
        out.update(self.named)
        for name, rect in out.items():
            if isinstance(rect, list):
                raise XlgptError(f"template: the {name} stage gives one block per head; it must give one block")
        if self.vocab is not None:
            if self.vocabulary is None:
                raise XlgptError(
                    "template: with a vocabulary, some stage must read the token table (op embedding or unembed)"
                )
            out[C.VOCABULARY] = self.vocabulary
        return out


def lower(spec, ckpt, inputs, about, vocab=None, edits=None, sae=None, training=None, values=True):
    """Lower everything. Returns (Book, defined names {name: Rect}).

    `inputs` (compile/inputs.py) are the token ids, or a Prompt cell the book tokenizes itself; `about`
    (contract.About) is what the book records about itself; `vocab`, each token's text, labels the embedding
    table, the logits and the predictions; `edits` (inputs.Edits) the interventions' starting values; `sae`
    (weights.sae.SAE) the sparse autoencoder of the Features tab; `training` (backward.Training) makes a training
    book: the template's loss, then the backward pass and the optimizer's step. `values`: every formula cell
    carries the value it computes (compile/values.py: each formula evaluated as it is written), else none."""
    if not any(stage.op == "lens" for stage in spec.stages):  # a template without the lens records none
        about = replace(about, lens=None)
    elif about.lens is None:
        about = replace(about, lens=lens_for(ckpt.config, inputs.positions))
    edits = edits or Edits.none(ckpt.config)
    lowering = Lowering(spec, ckpt, inputs, vocab, edits, sae, training, values, about.lens == C.LENS_LAST)
    lowering.run()
    # each stage with the cells of its output (a Rect, or one per head), in dataflow order: what eval reads to
    # tell which stage of a book leaves the reference first
    # (a stage that only passes its input on, as patching does outside the patched run, is not one)
    out = lowering.out
    lowering.book.stages = [
        (stage, out[stage.index])
        for stage in spec.stages
        if not any(out[stage.index] is out[i] for i in stage.inputs if isinstance(i, int))
    ]
    names = lowering.names()
    names.update(inputs.add_tabs(lowering.book, names.get(C.VOCABULARY)))
    info = lowering.book[lowering.inputs_tab]
    names.update(inputs.prediction(info, lowering.headers[spec.output(C.STAGE_OF[C.LOGITS]).tab], names))
    if about.calculation is None:
        about = replace(about, calculation=calculation_for(lowering.book))
    names.update(C.write_about(info, about, model_description(ckpt)))
    add_guide(lowering.book, names, inputs, model_description(ckpt), about.calculation)
    lowering.book.calculation = about.calculation
    if lowering.book.formula_values is not None:
        lowering.book.formula_values.finish(names)  # the formulas that read cells or names made after them
    lowering.book.counts = lowering.book.attach_values()
    return lowering.book, names


def calculation_for(book):
    """The calculation mode a book gets by default: automatic, or manual when it is large."""
    formulas = sum(sheet.cell_counts()[1] for sheet in book.sheets())
    return C.MANUAL if formulas > C.MANUAL_ABOVE else C.AUTO


def lens_for(cfg, positions):
    """Where a book's logit lens reads by default: every position, or only the last when that lens is large."""
    cells = (cfg.n_layer + 1) * cfg.vocab_size * positions
    return C.LENS_LAST if cells > C.LENS_EVERY_POSITION_UP_TO else C.LENS_EVERY


def model_description(ckpt):
    cfg = ckpt.config
    return [
        (
            "model",
            f"GPT-2: {cfg.n_layer} layers, {cfg.n_embd} features, {cfg.n_head} heads, "
            f"vocabulary {cfg.vocab_size}, context {cfg.n_positions}",
        ),
        ("parameters", ckpt.n_params),
        ("built by", f"xlgpt {__version__}"),
    ]
