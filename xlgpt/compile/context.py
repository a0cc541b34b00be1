"""What an op sees, and all an op author needs to learn: `Ctx`, its stage, the model's shape, blocks on its
tab, its weights, and formulas rendered relative to the tab. An op writes formulas and nothing else: the book
computes what each one shows (compile/values.py)."""

from dataclasses import dataclass

import numpy as np

from xlgpt.package import XlgptError
from xlgpt.sheet.cells import column_letter
from xlgpt.sheet.layout import FIRST_COL, NOTE_COL, Formula, Named, Rect
from xlgpt.sheet.styles import IDS, NUMBER, PADDING, colour_scale, when

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
        self.sae, self.lens_at_last = lowering.sae, lowering.lens_at_last
        self.tab = lowering.book[stage.tab]
        self.header = lowering.headers.get(stage.tab)
        if self.header:
            self.positions, self.token_ids = self.header.positions, self.header.ids
        self.title = stage.title
        self.run = lowering.run_name  # None: the clean run (the book's own); else one of contract.RUNS
        # formula text of the column number (1-based) of the prompt's last token
        self.last_position = lowering.inputs.last_position()

    def fail(self, message):
        raise XlgptError(message)

    number = staticmethod(number)
    heat_from_zero = colour_scale(0)  # white at 0, blue at the largest
    heat = colour_scale(0, 1)  # probabilities: white at 0, blue at 1
    formula = staticmethod(Formula)

    def texts(self, ids):
        """The vocabulary's text of each token id (what INDEX(Vocabulary, id + 1) shows)."""
        return [self.vocab[int(i)] for i in np.ravel(ids)]

    def save(self, **rects):
        """Keep blocks the stage's backward reads (a training book, attribution patching): LayerNorm's
        statistics, the loss's; each run's own."""
        self.lowering.saved[self.run, self.stage.index] = rects

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
        columns = [{k: v.col(t) if self.by_position(v) else v for k, v in refs.items()} for t in range(self.T)]
        for t, column in enumerate(columns):
            self.tab.array(rect.col(t), template, evaluate=False, **column)
        if self.tab.evaluator() is not None:  # the columns' values at once: one batch of T
            self.tab.evaluator().columns(rect, template, columns)
        return rect

    def product(self, rect, template, zeros, **refs):
        """A matrix product (Ctx.array) where a book that tokenizes a Prompt cell computes it only at the
        prompt's positions: a padding column gets zeros (`zeros`: formula text of that column's shape), and a
        typed prompt then costs the products of its own tokens, not of the book's every position."""
        used = self.header.in_prompt if self.header else None
        if used is None or not self.by_position(rect):
            return self.array(rect, template, **refs)
        return self.array(rect, f"IF({{used}}=1,{template},{zeros})", used=used, **refs)

    def by_position(self, ref):
        """Is `ref` a block of this book's computation tabs with the token positions as its columns?"""
        return (
            isinstance(ref, Rect)
            and not isinstance(ref, Named)
            and ref.width == self.T
            and ref.left == FIRST_COL
            and ref.sheet in self.lowering.headers
        )

    def each(self, rect, template, style=0, **refs):
        return self.tab.each(rect, template, style, **refs)

    def each_array(self, rect, template, **refs):
        return self.tab.each_array(rect, template, **refs)

    def per_head(self, formula, step=None, title=None):
        """One T x T block per head (rows: key positions, columns: query positions) under `title` (default: the
        stage's); formula(h, block) gives (text, refs) of the array formula filling head h's block, or writes
        its formulas itself and gives None. `step` names what the blocks hold (default: the stage's name), so
        that the Guide's contents tell the scores, masked scores, exponentials and weights of a head apart."""
        step = step or self.stage.name
        self.tab.title(title or self.title)
        blocks = []
        for h in range(self.cfg.n_head):
            labels = self.rows(None if self.header.text is not None else "key position", self.T)
            block = self.block(labels, f"{step}, head {h}: rows are key positions, columns query positions")
            if self.header.text is not None:  # each key row labelled with its token
                self.array(block.label_column(), "TRANSPOSE({tokens})", tokens=self.header.text)
            if self.header.in_prompt is not None:  # the padding keys' rows grey, as the padding columns are
                in_prompt = self.header.in_prompt.ref(self.tab.name)
                key = f"${column_letter(NOTE_COL)}{block.top}"
                self.tab.heatmap(block, when(f"INDEX({in_prompt},1,{key}+1)=0", PADDING))
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
            row = self.tab.block(
                [("1 at the prompt's last token", None)], self.T, "Which column is the prompt's last token"
            )
            rows[self.tab.name] = self.tab.each(
                row, "IF({t}={last},1,0)", IDS, t=lambda _, t: t + 1, last=self.last_position
            )
            self.tab.format(row, IDS)
        return rows[self.tab.name]

    def at_last_position(self, block, title, labels=None):
        """Column of `block` at the prompt's last token, as a column of its own (rows: `labels`, default the
        vocabulary). CHOOSE evaluates only the column it picks, so LibreOffice asked for this one computes no
        other (generation's padding columns); a very wide block (Excel's 8,192 characters) takes a one-hot MMULT,
        which reads every column."""
        labels = labels or [(label, i) for i, label in enumerate(self.vocab or ["token"] * block.height)]
        column = self.block(labels, title, 1)
        if block.width <= 256:
            refs = {f"c{t}": block.col(t) for t in range(block.width)}
            self.array(column, choose(self.last_position, [f"{{{k}}}" for k in refs]), **refs)
        else:
            self.array(column, "MMULT({block},TRANSPOSE({onehot}))", block=block, onehot=self.last_position_row())
        return column

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
        return tab.vector(title, values) if values.ndim == 1 else tab.matrix(title, values, labels)

    def clean_input(self, k):
        """The clean run's block for this stage's k-th input (activation patching takes it from there)."""
        return self.lowering.out[self.stage.inputs[k]]

    def stream_entering(self, layer):
        """The residual stream entering block `layer` (after its steering): the output of that layer's steer
        stage, or the last residual stream before the block's first stage."""
        stages = self.lowering.spec.stages
        first = next(s for s in stages if s.layer == layer)
        if first.op == "steer":
            return self.lowering.out[first.index]
        return self.lowering.out[[s for s in stages[: first.index] if s.name == "x"][-1].index]

    def token_table(self):
        """The embedding table wte, one row per token id, labelled with the token's text when known."""
        table = self.weight("table", self.vocab, as_stored=True).rect
        self.lowering.vocabulary = table.label_column() if self.vocab else None
        return table

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
    groups = [choose(index, values[i : i + size], offset + i) for i in range(0, len(values), size)]
    return f"CHOOSE(INT(({at}-1)/{size})+1,{','.join(groups)})"
