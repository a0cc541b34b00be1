"""Pass 2: lower a spec, a checkpoint and the inputs into a Book of tabs, running each stage's op.

Computation tabs put token positions in columns and features in rows, under a frozen header (position,
token id, its text, and in a prompt-cell book whether the position holds the prompt or padding). Each op
(xlgpt/ops/) turns into a few classic array formulas ({=MMULT(...)}) or one small formula per cell where a
person should see a single step (LayerNorm statistics, softmax maxima and sums, the embedding lookup).
"""
from dataclasses import astuple, dataclass, replace

import numpy as np

from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C
from xlgpt.sheet.layout import BOLD, FIRST_COL, Book, Formula, Named, Rect, Tab, WeightsTab
from xlgpt.compile.ops import OPS
from xlgpt.compile.guide import add_guide
from xlgpt.compile.inputs import Edits
from xlgpt.sheet.styles import IDS, NUMBER, colour_scale


TRANSPOSED = ", transposed: row = output feature"  # a weights tab's title for a matrix it holds transposed


def number(x):
    """A Python float as formula text: shortest round-trip form, upper-case exponent."""
    return repr(float(x)).upper()


@dataclass(frozen=True)
class Stored:
    """A 2-D tensor on its weights tab, stored transposed or not (whichever keeps the tab narrow)."""
    rect: object
    transposed: bool


@dataclass
class Header:
    """A computation tab's frozen header rows (Rects of T cells; text and in_prompt may be None)."""
    positions: object
    ids: object
    text: object
    in_prompt: object


class Ctx:
    """What an op sees: its stage, the model's shape, blocks on its tab, its weights, formula rendering."""

    def __init__(self, lowering, stage):
        self.lowering, self.stage = lowering, stage
        self.cfg, self.T, self.vocab, self.edits = lowering.cfg, lowering.T, lowering.vocab, lowering.edits
        self.sae = lowering.sae
        self.tab = lowering.book[stage.tab]
        self.header = lowering.headers.get(stage.tab)
        if self.header:
            self.positions, self.token_ids = self.header.positions, self.header.ids
        self.title = stage.title
        # formula text of the column number (1-based) of the prompt's last token
        self.last_position = lowering.inputs.last_position()

    def fail(self, message):
        raise XlgptError(message)

    number = staticmethod(number)
    heat_from_zero = colour_scale(0)  # white at 0, blue at the largest
    heat = colour_scale(0, 1)  # probabilities: white at 0, blue at 1
    formula = staticmethod(Formula)

    def value(self, ref):
        """The results of an earlier block's cells (a Rect, or a defined name's cells), as computed at build time:
        a 2-D array, or None when unknown (so are the values computed from it)."""
        rect = self.lowering.named.get(ref) if isinstance(ref, str) else ref
        return None if rect is None else self.lowering.book.value(rect)

    def known(self, *rects):
        """Are the cached values of all these blocks known?"""
        return all(self.value(r) is not None for r in rects)

    def cache(self, rect, values):
        """Record what `rect`'s formulas compute (from the reference's values: see Lowering.cache_stage); the
        book carries them as the cells' cached values. None (computed from unknown values) records nothing."""
        return self.lowering.book.cache(rect, values)

    def reference_value(self, name):
        """The reference's last output of the stages named `name` ([position, feature]), or None."""
        stages = self.lowering.reference_stages or ()
        return next((value for n, _, value in reversed(stages) if n == name), None)

    def texts(self, ids):
        """The vocabulary's text of each token id (what INDEX(Vocabulary, id + 1) shows)."""
        return [self.vocab[int(i)] for i in np.ravel(ids)]

    def save(self, **rects):
        """Keep blocks the stage's backward reads (a training book): LayerNorm's statistics, the loss's."""
        self.lowering.saved[self.stage.index] = rects

    def name(self, name, rect):
        """Give `rect` one of the contract's defined names."""
        self.lowering.named[name] = rect

    def named(self, name):
        """The cells an earlier stage named `name` (formulas then read them directly: Gnumeric cannot INDEX
        into a one-cell name)."""
        if name not in self.lowering.named:
            raise XlgptError(f"template: stage '{self.stage.name}' reads {name}, which no earlier stage makes")
        return self.lowering.named[name]

    def rows(self, name, n):
        """Row labels: (name, i) for i < n."""
        return [(name, i) for i in range(n)]

    def block(self, labels, title=None, width=None):
        """The next block on the tab: one row per label, T columns (or `width`); titled with the stage's
        title unless given another."""
        block = self.tab.block(labels, width or self.T, self.title if title is None else title)
        return self.tab.format(block, NUMBER)

    def array(self, rect, template, **refs):
        """An array formula filling `rect`. A block with the positions as columns gets one per column, reading
        the other such blocks a column at a time: an edit at one position then recalculates only the columns
        it reaches (the sheet's own KV cache), not whole blocks."""
        if not self.by_position(rect):
            return self.tab.array(rect, template, **refs)
        for t in range(self.T):
            self.tab.array(rect.col(t), template, **{k: v.col(t) if self.by_position(v) else v
                                                      for k, v in refs.items()})
        return rect

    def by_position(self, ref):
        """Is `ref` a block of this book's computation tabs with the token positions as its columns?"""
        return (isinstance(ref, Rect) and not isinstance(ref, Named) and ref.width == self.T
                and ref.left == FIRST_COL and ref.sheet in self.lowering.headers)

    def each(self, rect, template, style=0, **refs):
        return self.tab.each(rect, template, style, **refs)

    def each_array(self, rect, template, **refs):
        return self.tab.each_array(rect, template, **refs)

    def per_head(self, formula):
        """One T x T block per head (rows: key positions, columns: query positions); formula(h, block)
        gives (text, refs) of the array formula filling head h's block, or writes its formulas itself and
        gives None."""
        self.tab.title(self.title)
        blocks = []
        for h in range(self.cfg.n_head):
            labels = self.rows(None if self.header.text is not None else "key position", self.T)
            block = self.block(labels, f"head {h}: rows are key positions, columns query positions")
            if self.header.text is not None:  # each key row labelled with its token
                self.array(block.label_column(), "TRANSPOSE({tokens})", tokens=self.header.text)
                texts = self.value(self.header.text)
                self.cache(block.label_column(), None if texts is None else texts.T)
            written = formula(h, block)
            if written is not None:
                text, refs = written
                self.array(block, text, **refs)
            blocks.append(block)
        return blocks

    def last_position_row(self):
        """A row of T cells on this tab: 1 at the prompt's last token, 0 elsewhere (to pick that column out of
        a block with MMULT)."""
        rows = self.lowering.onehots
        if self.tab.name not in rows:
            row = self.tab.block([("1 at the prompt's last token", None)], self.T, "Which column is the prompt's last token")
            rows[self.tab.name] = self.tab.each(row, "IF({t}={last},1,0)", IDS, t=lambda _, t: t + 1,
                                                last=self.last_position)
            self.tab.format(row, IDS)
            if self.lowering.last is not None:  # known when the book is built from the reference's values
                self.cache(row, np.arange(self.T) == self.lowering.last)
        return rows[self.tab.name]

    def at_last_position(self, block, title):
        """Column of `block` at the prompt's last token, as a column of its own. CHOOSE evaluates only the
        column it picks, so LibreOffice asked for this one computes no other (generation's padding columns);
        a very wide block (Excel's 8,192 characters) takes a one-hot MMULT, which reads every column."""
        column = self.block([(label, i) for i, label in enumerate(self.vocab or ["token"] * block.height)], title, 1)
        if block.width <= 256:
            refs = {f"c{t}": block.col(t) for t in range(block.width)}
            self.array(column, choose(self.last_position, [f"{{{k}}}" for k in refs]), **refs)
        else:
            self.array(column, "MMULT({block},TRANSPOSE({onehot}))", block=block, onehot=self.last_position_row())
        values = self.value(block)
        return self.cache(column, None if values is None else values[:, self.lowering.last])

    def result_row(self):
        """A one-row result: (row, its token texts or None) in the frozen header for a header stage."""
        if self.stage.header:
            return self.lowering.header_slots[self.stage.index]
        return self.block([(self.title, None)]), None

    def weight(self, role, labels=None, as_stored=False):
        return self.lowering.weight(self.stage, role, labels, as_stored)

    def place(self, title, values, labels=None):
        """Numbers that are not the checkpoint's (an SAE's) on this tab's weights tab: a Rect."""
        tab = self.lowering.weights_tab(self.stage.tab)
        return self.cache(tab.vector(title, values) if values.ndim == 1 else tab.matrix(title, values, labels), values)

    def stream_entering(self, layer):
        """The residual stream entering block `layer` (after its steering): the output of that layer's steer
        stage, or the last residual stream before the block's first stage."""
        stages = self.lowering.spec.stages
        first = next(s for s in stages if s.layer == layer)
        if first.op == "steer":
            return self.lowering.out[first.index]
        return self.lowering.out[[s for s in stages[:first.index] if s.name == "x"][-1].index]

    def token_table(self):
        """The embedding table wte, one row per token id, labelled with the token's text when known."""
        table = self.weight("table", self.vocab, as_stored=True).rect
        self.lowering.vocabulary = table.label_column() if self.vocab else None
        if self.vocab:
            self.cache(self.lowering.vocabulary, self.vocab)
        return table

    def stored_value(self, stored):
        """The cached values of a stored matrix, as the checkpoint holds it ([in, out]), as float64."""
        value = self.value(stored.rect).astype(float)
        return value.T if stored.transposed else value

    def as_is(self, stored):
        """Formula text for a stored matrix, as the checkpoint holds it ([in, out])."""
        ref = stored.rect.ref(self.tab.name)
        return f"TRANSPOSE({ref})" if stored.transposed else ref

    def transposed(self, stored, rows=None):
        """Formula text for a stored matrix's transpose (of its rows [start, stop) only, if given)."""
        rect = stored.rect
        if stored.transposed:
            return (rect if rows is None else rect.cols(*rows)).ref(self.tab.name)
        return f"TRANSPOSE({(rect if rows is None else rect.rows(*rows)).ref(self.tab.name)})"


def choose(index, values, offset=0):
    """CHOOSE(index, values...) nested in groups of at most 30 values: LibreOffice reads at most 30 (and numpy's
    choose, in `formulas`, 32)."""
    size = 1
    while size * 30 < len(values):
        size *= 30
    at = f"{index}-{offset}" if offset else index
    if size == 1:
        return f"CHOOSE({at},{','.join(values)})"
    groups = [choose(index, values[i:i + size], offset + i) for i in range(0, len(values), size)]
    return f"CHOOSE(INT(({at}-1)/{size})+1,{','.join(groups)})"


class Lowering:
    def __init__(self, spec, ckpt, inputs, vocab=None, edits=None, sae=None, training=None, reference=None):
        self.spec, self.ckpt, self.cfg, self.inputs, self.vocab = spec, ckpt, ckpt.config, inputs, vocab
        self.reference = {}  # (stage name, layer) -> the reference's outputs of stages of that name, in order
        self.reference_stages = reference["stages"] if reference else None
        for name, layer, value in reference["stages"] if reference else ():
            self.reference.setdefault((name, layer), []).append(value)
        for key, values in self.reference.items():  # a name's stages align at the end: a template without the
            n = sum((s.name, s.layer) == key for s in spec.stages)  # steering stage (training's) has one x
            del values[:max(0, len(values) - n)]                     # fewer per layer, the one entering it
        # the token id at each position (the sheet pads with 0) and the prompt's last position (0-based)
        self.tokens = list(reference["tokens"]) + [0] * (inputs.positions - len(reference["tokens"])) if reference else None
        self.last = len(reference["tokens"]) - 1 if reference else None
        self.edits, self.sae, self.training = edits, sae, training
        self.memo = {}  # cached values several stages read alike (the attribution's direction)
        self.saved, self.param_grads = {}, {}  # a training book's: blocks each backward reads, gradient contributions
        self.T = inputs.positions
        self.book = Book()
        self.placed, self.out, self.header_slots, self.headers, self.named, self.onehots = {}, {}, {}, {}, {}, {}
        self.vocabulary = None
        self.inputs_tab = spec.stages[0].tab
        for name in spec.tabs():
            op = OPS[next(s.op for s in spec.stages if s.tab == name)]
            tab = self.book.add(Tab(name, name, op.group))
            if op.header:
                self.headers[name] = self.header(tab)
            else:
                tab.skip()

    def header(self, tab):
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
            if self.tokens is not None:
                self.book.cache(ids, self.tokens)
                if text is not None:
                    self.book.cache(text, [self.vocab[i] if t <= self.last else "(padding)" for t, i in enumerate(self.tokens)])
                if in_prompt is not None:
                    self.book.cache(in_prompt, [int(t <= self.last) for t in range(T)])
        else:
            source = self.headers[self.inputs_tab]
            for mine, theirs in ((ids, source.ids), (text, source.text), (in_prompt, source.in_prompt)):
                if mine is not None:
                    tab.format(tab.array(mine, "{row}", row=theirs), BOLD)
                    self.book.cache(mine, self.book.value(theirs))
        for stage in self.spec.stages:
            if stage.tab == tab.name and stage.header:
                row = tab.header(stage.title, T)
                self.header_slots[stage.index] = (row, tab.header(stage.title + " (text)", T)
                                                  if self.vocab is not None else None)
        tab.freeze()
        return header

    def backward_tab(self, tab, own=False):
        """The tab a stage's backward goes on: "<tab> backward" (made on first use, in reverse order of the
        forward tabs), or the stage's own tab (the loss's)."""
        name = tab if own else f"{tab} backward"
        if name not in self.book.tabs:
            self.headers[name] = self.header(self.book.add(Tab(name, name, "training")))
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
            placed = self.placed[tensor]
            if value.ndim == 1:
                self.book.cache(placed, value)
            else:
                self.book.cache(placed.rect, value.T if placed.transposed else value)
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
        for stage in self.spec.stages:
            inputs = [self.out[i] if isinstance(i, int) else [self.out[j] for j in i] for i in stage.inputs]
            self.out[stage.index] = OPS[stage.op].lower(Ctx(self, stage), *inputs)
            self.cache_stage(stage, self.out[stage.index])
        if self.training is not None:
            from xlgpt.compile.backward import backward, optimizer
            backward(self)
            optimizer(self, self.training)
        for name, header in self.headers.items():  # padding positions greyed, on every tab that has them
            if header.in_prompt is not None:
                self.book[name].grey_padding(header.in_prompt)

    def cache_stage(self, stage, out):
        """A stage's output cells take the reference's values of the stage of that name (reference.run's
        cache["stages"], laid out as eval's verify.stage_references reads them: features down, positions across;
        per head, keys down and queries across), unless the op recorded its own."""
        values = self.reference.get((stage.name, stage.layer))
        if not values:
            return
        value = values.pop(0)
        blocks = list(zip(out, value)) if isinstance(out, list) and value.ndim == 3 else [(out, value)]
        for rect, v in blocks:
            if isinstance(rect, Rect) and rect.height == v.shape[1] and rect.width == v.shape[0] \
                    and self.book.value(rect) is None:
                self.book.cache(rect, v.T)

    def names(self):
        """The contract's names of the results (and of the vocabulary, when the book has token texts)."""
        out = {name: self.out[self.spec.output(stage).index] for name, stage in C.STAGE_OF.items()}
        out.update(self.named)
        for name, rect in out.items():
            if isinstance(rect, list):
                raise XlgptError(f"template: the {name} stage gives one block per head; it must give one block")
        if self.vocab is not None:
            if self.vocabulary is None:
                raise XlgptError("template: with a vocabulary, some stage must read the token table "
                                 "(op embedding or unembed)")
            out[C.VOCABULARY] = self.vocabulary
        return out


def lower(spec, ckpt, inputs, about, vocab=None, edits=None, sae=None, training=None, reference=None):
    """Lower everything. Returns (Book, defined names {name: Rect}).

    `inputs` (compile/inputs.py) are the token ids, or a Prompt cell the book tokenizes itself; `about`
    (contract.About) is what the book records about itself; `vocab`, each token's text, labels the embedding
    table, the logits and the predictions; `edits` (inputs.Edits) the interventions' starting values; `sae`
    (weights.sae.SAE) the sparse autoencoder of the Features tab; `training` (backward.Training) makes a training
    book: the template's loss, then the backward pass and the optimizer's step. `reference`: {"stages": the
    reference's cache["stages"] for the book's tokens at all its positions, "tokens": the prompt's token ids}: the
    values the formula cells carry cached (ops compute their other blocks' from them, next to their formulas)."""
    lowering = Lowering(spec, ckpt, inputs, vocab, edits or Edits.none(ckpt.config), sae, training, reference)
    lowering.run()
    # each stage with the cells of its output (a Rect, or one per head), in dataflow order: what eval reads to
    # tell which stage of a book leaves the reference first
    lowering.book.stages = [(stage, lowering.out[stage.index]) for stage in spec.stages]
    names = lowering.names()
    names.update(inputs.add_tabs(lowering.book, names.get(C.VOCABULARY)))
    info = lowering.book[lowering.inputs_tab]
    names.update(inputs.prediction(info, lowering.headers[spec.output(C.STAGE_OF[C.LOGITS]).tab], names, lowering))
    if about.calculation is None:
        about = replace(about, calculation=calculation_for(lowering.book))
    names.update(C.write_about(info, about, model_description(ckpt)))
    add_guide(lowering.book, names, inputs, model_description(ckpt), about.calculation)
    lowering.book.calculation = about.calculation
    lowering.book.attach_values()
    return lowering.book, names


def calculation_for(book):
    """The calculation mode a book gets by default: automatic, or manual when it is large."""
    formulas = sum(sheet.cell_counts()[1] for sheet in book.sheets())
    return C.MANUAL if formulas > C.MANUAL_ABOVE else C.AUTO


def model_description(ckpt):
    cfg = ckpt.config
    from xlgpt.package import __version__
    return [("model", f"GPT-2: {cfg.n_layer} layers, {cfg.n_embd} features, {cfg.n_head} heads, "
                      f"vocabulary {cfg.vocab_size}, context {cfg.n_positions}"),
            ("parameters", ckpt.n_params), ("built by", f"xlgpt {__version__}")]
