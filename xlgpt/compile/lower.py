"""Pass 2: lower a model spec, a checkpoint and the input tokens into sheets of cell blocks.

Computation tabs put token positions in columns (C, D, ...) and features in rows, with a frozen header
(row 2: position, row 3: token id, row 4: its text) so every block below stays labelled. Each stage's op turns into a
few classic array formulas ({=MMULT(...)}) or one small formula per cell where a person should see a
single step (LayerNorm statistics, softmax maxima and sums, the embedding lookup).
"""
from dataclasses import dataclass

import numpy as np

from .. import XlgptError
from .template import TOKENS
from ..layout import Rect as Region
from ..xlsx.writer import (BOLD, INPUT, TITLE, ArrayFormula, Cells, Formula, Numbers, Sheet, cell_name,
                   column_letter, quote_sheet)

FIRST = 3          # first position column (C); A holds row labels, B row indices
POS_ROW, TOKEN_ROW, TEXT_ROW = 2, 3, 4
HEADER_ROWS = 2    # rows a header stage reserves: its result and, with a vocabulary, that result's text


@dataclass
class Heads:
    """An output made of one region per attention head."""
    parts: list


def number(x):
    """A Python float as formula text: shortest round-trip form, upper-case exponent."""
    return repr(float(x)).upper()


def column(region, j):
    return Region(region.sheet, region.top, region.left + j, region.height, 1)


def row(region, i):
    return Region(region.sheet, region.top + i, region.left, 1, region.width)


# the predicted token's text, or the message the prediction cell shows instead of a token
PREDICTED_TEXT = "IF(ISNUMBER(PredictedToken),INDEX(Vocabulary,PredictedToken+1),PredictedToken)"


@dataclass(frozen=True)
class TypedPrompt:
    """Where a book with an in-sheet tokenizer finds its input: defined names of the token ids (a row,
    "" past the last token), their count and the tokenizer's status ("ok" or why the text does not fit)."""
    ids: str = "SheetTokenIds"
    count: str = "SheetTokenCount"
    status: str = "TokenizerStatus"


class Tab:
    """A sheet filled top to bottom: title, frozen position/token header, then labelled blocks."""

    def __init__(self, name, title, n_positions, inputs_tab, header_rows=0, token_ids=None, texts=False,
                 typed=None):
        """The inputs tab holds the token ids (`token_ids`, or with `typed` formulas reading the in-sheet
        tokenizer, padded to n_positions); every other tab refers to them."""
        self.name, self.T, self.texts = name, n_positions, texts
        self.sheet = Sheet(name, widths={1: 30, 2: 7})
        self.sheet.add(Cells(1, 1, [[title]], style=TITLE))
        self.sheet.add(Cells(POS_ROW, 1, [["position", None] + list(range(n_positions))], style=BOLD))

        def from_inputs(row):
            return [Formula(f"{quote_sheet(inputs_tab)}!{column_letter(FIRST + t)}${row}") for t in range(n_positions)]

        is_inputs = token_ids is not None
        col = lambda t: column_letter(FIRST + t)
        self.prompt_row = (TEXT_ROW if texts else TOKEN_ROW) + 1 if typed else None
        if is_inputs and typed:  # 1 for the prompt's tokens, 0 for the padding after them
            in_prompt = [Formula(f"IF(ISNUMBER({typed.count}),IF({t}<{typed.count},1,0),0)") for t in range(n_positions)]
            token_ids = [Formula(f"IF({col(t)}${self.prompt_row}=1,INDEX({typed.ids},1,{t + 1}),0)")
                         for t in range(n_positions)]
        self.sheet.add(Cells(TOKEN_ROW, 1, [["token id", None]], style=BOLD))
        self.sheet.add(Cells(TOKEN_ROW, FIRST, [list(token_ids) if is_inputs else from_inputs(TOKEN_ROW)],
                             style=INPUT if is_inputs and not typed else BOLD))
        last = TOKEN_ROW
        if texts:  # each position's token as text, looked up in the vocabulary
            text = lambda t: f"INDEX(Vocabulary,{col(t)}{TOKEN_ROW}+1)"
            text_row = ([Formula(f'IF({col(t)}${self.prompt_row}=1,{text(t)},"(padding)")' if typed else text(t))
                         for t in range(n_positions)] if is_inputs else from_inputs(TEXT_ROW))
            self.sheet.add(Cells(TEXT_ROW, 1, [["token", None] + text_row], style=BOLD))
            last = TEXT_ROW
        if typed:
            self.sheet.add(Cells(self.prompt_row, 1, [["in prompt (1) or padding (0)", None]
                                                      + (in_prompt if is_inputs else from_inputs(self.prompt_row))],
                                 style=BOLD))
            last = self.prompt_row
        self.next_header = last + 1
        self.sheet.freeze = (last + 1 + header_rows, FIRST)
        self.row = last + header_rows + 2

    def positions(self):
        return Region(self.name, POS_ROW, FIRST, 1, self.T)

    def tokens(self):
        return Region(self.name, TOKEN_ROW, FIRST, 1, self.T)

    def header(self, label):
        """Rows of the frozen header for a result that should stay in view: (result row, text row or None)."""
        r = Region(self.name, self.next_header, FIRST, 1, self.T)
        self.sheet.add(Cells(r.top, 1, [[label]], style=BOLD))
        self.next_header += HEADER_ROWS
        return r, (Region(self.name, r.top + 1, FIRST, 1, self.T) if self.texts else None)

    def title(self, text):
        self.sheet.add(Cells(self.row, 1, [[text]], style=BOLD))
        self.row += 1

    def block(self, labels, title=None, width=None):
        """Reserve len(labels) rows of T (or width) columns; labels are (A text, B index) pairs."""
        if title:
            self.title(title)
        top = self.row
        self.sheet.add(Cells(top, 1, [list(pair) for pair in labels]))
        self.row += len(labels) + 1
        return Region(self.name, top, FIRST, len(labels), width or self.T)


@dataclass(frozen=True)
class Stored:
    """A 2-D tensor on its weights tab, stored transposed or not (whichever keeps the tab narrow)."""
    region: Region
    transposed: bool

    def t(self, sheet, first=None):
        """Formula text for the tensor's transpose, of its `first` rows only if given."""
        if self.transposed:
            return (self.region if first is None else self.region.cols(0, first)).ref(sheet)
        return f"TRANSPOSE({(self.region if first is None else self.region.rows(0, first)).ref(sheet)})"


class WeightsTab:
    """A sheet of parameter tensors. Matrices stack downwards, at most `width` columns wide; vectors
    stand side by side as columns to their right. A narrow, dense sheet matters: the `formulas`
    engine visits every cell of a sheet's bounding box, empty or not."""

    def __init__(self, name, width):
        self.sheet = Sheet(name, widths={1: 30, 2: 7})
        self.sheet.add(Cells(1, 1, [[name]], style=TITLE))
        self.width, self.row = width, 3
        self.index_col = FIRST + width + 1  # after a blank column: the vectors' indices, then the vectors
        self.next_vector, self.index = self.index_col + 1, None

    def matrix(self, title, values, labels=None):
        """Write values under a title, with column and row indices (and row labels in column A)."""
        n_rows, n_cols = values.shape
        if n_cols > self.width:
            raise XlgptError(f"template: {title} is {n_cols} wide, more than its weights tab allows ({self.width})")
        top = self.row
        self.sheet.add(Cells(top, 1, [[title]], style=BOLD))
        if labels is not None:
            self.sheet.add(Cells(top + 2, 1, [[text] for text in labels]))
        self.sheet.add(Numbers(top + 1, FIRST, np.arange(n_cols)[None, :]))
        self.sheet.add(Numbers(top + 2, 2, np.arange(n_rows)[:, None]))
        self.sheet.add(Numbers(top + 2, FIRST, values))
        self.row += n_rows + 4
        return Region(self.sheet.name, top + 2, FIRST, n_rows, n_cols)

    def vector(self, title, values):
        """A column with its title above it, to the right of the matrices."""
        col, self.next_vector = self.next_vector, self.next_vector + 1
        self.sheet.add(Cells(3, col, [[title]], style=BOLD))
        self.sheet.add(Numbers(5, col, values.reshape(-1, 1)))
        indices = np.arange(len(values))[:, None]
        if self.index is None:
            self.index = self.sheet.add(Numbers(5, self.index_col, indices))
        elif len(values) > self.index.height:  # the index column grows with the longest vector
            self.index.values = indices
        self.sheet.widths[col] = 12
        return Region(self.sheet.name, 5, col, len(values), 1)


class Lowering:
    def __init__(self, spec, ckpt, tokens, vocab=None, typed=None):
        self.spec, self.ckpt, self.cfg, self.vocab = spec, ckpt, ckpt.config, vocab
        self.T = len(tokens)
        self.tabs, self.weight_tabs, self.placed, self.out = {}, {}, {}, {}
        headers = {}
        for s in spec.stages:
            headers[s.tab] = headers.get(s.tab, 0) + s.header * HEADER_ROWS
        texts = vocab is not None
        self.tokens_tab = Tab(spec.inputs_tab, spec.inputs_title, self.T, spec.inputs_tab, token_ids=tokens,
                              texts=texts, typed=typed)
        for name in spec.tabs():
            self.tabs[name] = Tab(name, name, self.T, spec.inputs_tab, headers[name], texts=texts, typed=typed)
        self.out[TOKENS] = self.tokens_tab.tokens()

    # --- helpers -------------------------------------------------------------------------------
    def weight(self, stage, role, labels=None, as_stored=False):
        """Place a tensor on the stage's weights tab on first use: a vector as a column (Region), a
        matrix with its shorter side across unless `as_stored` (Stored)."""
        tensor = stage.params[role]
        if tensor not in self.placed:
            tab_name = f"{stage.tab} weights"
            tab = self.weight_tabs.setdefault(tab_name, WeightsTab(tab_name, self.cfg.n_embd))
            value = self.ckpt[tensor]
            if value.ndim == 1:
                self.placed[tensor] = tab.vector(tensor, value)
            else:
                transposed = not as_stored and value.shape[0] < value.shape[1]
                title = tensor + (", transposed: row = output feature" if transposed else "")
                self.placed[tensor] = Stored(tab.matrix(title, value.T if transposed else value, labels), transposed)
        return self.placed[tensor]

    def token_table(self, stage):
        """An embedding table: one row per token id, labelled with the token's text when known."""
        table = self.weight(stage, "table", self.vocab, as_stored=True).region
        if self.vocab is not None:
            self.vocabulary = Region(table.sheet, table.top, 1, table.height, 1)
        return table

    def array(self, tab, region, formula):
        tab.sheet.add(ArrayFormula(region, formula))
        return region

    def per_cell(self, tab, region, formula):
        """One formula per cell: formula(i, j) for row i, column j of region."""
        tab.sheet.add(Cells(region.top, region.left,
                            [[Formula(formula(i, j)) for j in range(region.width)] for i in range(region.height)]))
        return region

    def labels(self, name, n, groups=None):
        """Row labels: `name i`, or for grouped rows (heads) `group h` with i counting within it."""
        if not groups:
            return [(name, i) for i in range(n)]
        size = n // len(groups)
        return [(groups[i // size], i % size) for i in range(n)]

    def head_names(self, prefix=""):
        return [f"{prefix}head {h}".strip() for h in range(self.cfg.n_head)]

    def lower(self):
        for stage in self.spec.stages:
            op = OPS.get(stage.op)
            if op is None:
                raise XlgptError(f"template: stage '{stage.name}' uses unknown op '{stage.op}' "
                                 f"(known: {', '.join(sorted(OPS))})")
            tab = self.tabs[stage.tab]
            inputs = [self.out[i] for i in stage.inputs]
            self.out[stage.index] = op(self, stage, tab, *inputs)
        return self.tokens_tab, self.tabs, self.weight_tabs

    # --- ops -------------------------------------------------------------------------------------
    def op_embedding(self, stage, tab, tokens):
        table = self.token_table(stage)
        out = tab.block(self.labels("feature", self.cfg.n_embd), stage.title)
        # feature i's column of wte, at the row of the token id in the frozen header
        return self.per_cell(tab, out, lambda i, j: (
            f"INDEX({column(table, i).ref(tab.name)},{column_letter(FIRST + j)}${TOKEN_ROW}+1)"))

    def op_positions(self, stage, tab):
        context = self.ckpt[stage.params["table"]].shape[0]
        if self.T > context:
            raise XlgptError(f"{self.T} tokens exceed the model's context of {context}")
        table = self.weight(stage, "table")
        out = tab.block(self.labels("feature", self.cfg.n_embd), stage.title)
        return self.array(tab, out, table.t(tab.name, first=self.T))

    def op_add(self, stage, tab, a, b):
        out = tab.block(self.labels(stage.name, a.height), stage.title)
        return self.array(tab, out, f"{a.ref(tab.name)}+{b.ref(tab.name)}")

    def op_layernorm(self, stage, tab, x):
        g, b = self.weight(stage, "weight"), self.weight(stage, "bias")
        stats = tab.block([("mean", None), ("variance", None)], stage.title + ": mean and variance of each column")
        xr = x.ref(tab.name)
        self.per_cell(tab, stats, lambda i, j: (
            f"AVERAGE({column(x, j).ref(tab.name)})" if i == 0 else
            f"SUMPRODUCT(({column(x, j).ref(tab.name)}-{cell_name(stats.top, stats.left + j)})^2)/{x.height}"))
        out = tab.block(self.labels(stage.name, x.height), stage.title + ": (x - mean) / sqrt(variance + eps) · weight + bias")
        mean, var = row(stats, 0).ref(tab.name), row(stats, 1).ref(tab.name)
        eps = number(self.cfg.layer_norm_epsilon)
        return self.array(tab, out, f"({xr}-{mean})/SQRT({var}+{eps})*{g.ref(tab.name)}+{b.ref(tab.name)}")

    def op_linear(self, stage, tab, x):
        w, b = self.weight(stage, "weight"), self.weight(stage, "bias")
        groups = None
        if "labels" in stage.options:  # e.g. q, k, v: each split into heads
            groups = [f"{g} {h}" for g in stage.options["labels"] for h in self.head_names()]
        out = tab.block(self.labels(stage.name, b.height, groups), stage.title)
        return self.array(tab, out, f"MMULT({w.t(tab.name)},{x.ref(tab.name)})+{b.ref(tab.name)}")

    def qkv_head(self, qkv, which, h):
        C, d = self.cfg.n_embd, self.cfg.head_size
        return qkv.rows(which * C + h * d, which * C + (h + 1) * d)

    def heads_block(self, stage, tab, formula, label="key position"):
        """One T x T block per head (rows: keys, columns: queries), formula(h, region) each."""
        tab.title(stage.title)
        parts = []
        for h, head in enumerate(self.head_names()):
            out = tab.block(self.labels(f"{head}, {label}", self.T), head)
            parts.append(self.array(tab, out, formula(h, out)))
        return Heads(parts)

    def op_attention_scores(self, stage, tab, qkv):
        d = self.cfg.head_size
        return self.heads_block(stage, tab, lambda h, out: (
            f"MMULT(TRANSPOSE({self.qkv_head(qkv, 1, h).ref(tab.name)}),{self.qkv_head(qkv, 0, h).ref(tab.name)})"
            f"/SQRT({d})"))

    def op_causal_mask(self, stage, tab, scores):
        query = tab.positions().ref(tab.name)
        return self.heads_block(stage, tab, lambda h, out: (
            f"IF({Region(tab.name, out.top, 2, self.T, 1).ref(tab.name)}<={query},"
            f"{scores.parts[h].ref(tab.name)},-1E+30)"))

    def op_softmax(self, stage, tab, x):
        names = self.head_names()
        mx = tab.block([(n, None) for n in names], stage.title + ": largest score in each column")
        self.per_cell(tab, mx, lambda h, j: f"MAX({column(x.parts[h], j).ref(tab.name)})")
        exp = self.heads_block(stage, tab, lambda h, out: (
            f"EXP({x.parts[h].ref(tab.name)}-{row(mx, h).ref(tab.name)})"))
        sums = tab.block([(n, None) for n in names], stage.title + ": sum of each column of exp(score - max)")
        self.per_cell(tab, sums, lambda h, j: f"SUM({column(exp.parts[h], j).ref(tab.name)})")
        return self.heads_block(stage, tab, lambda h, out: (
            f"{exp.parts[h].ref(tab.name)}/{row(sums, h).ref(tab.name)}"))

    def op_attention_mix(self, stage, tab, probs, qkv):
        d = self.cfg.head_size
        out = tab.block(self.labels(stage.name, self.cfg.n_embd, self.head_names()), stage.title)
        for h in range(self.cfg.n_head):
            self.array(tab, out.rows(h * d, (h + 1) * d),
                       f"MMULT({self.qkv_head(qkv, 2, h).ref(tab.name)},{probs.parts[h].ref(tab.name)})")
        return out

    def op_gelu(self, stage, tab, x):
        out = tab.block(self.labels(stage.name, x.height), stage.title)
        h = x.ref(tab.name)
        return self.array(tab, out, f"0.5*{h}*(1+TANH(SQRT(2/PI())*({h}+0.044715*{h}^3)))")

    def op_unembed(self, stage, tab, x):
        table = self.token_table(stage)
        labels = self.vocab or ["token"] * table.height
        out = tab.block([(text, i) for i, text in enumerate(labels)], stage.title)
        return self.array(tab, out, f"MMULT({table.ref(tab.name)},{x.ref(tab.name)})")

    def op_argmax(self, stage, tab, logits):
        out, text = tab.header(stage.title) if stage.header else (tab.block([(stage.title, None)], stage.title), None)
        if text:
            tab.sheet.add(Cells(text.top, 1, [[stage.title + " (text)"]], style=BOLD))
            self.per_cell(tab, text, lambda i, j: f"INDEX(Vocabulary,{cell_name(out.top, out.left + j)}+1)")
        return self.per_cell(tab, out, lambda i, j: (
            f"MATCH(MAX({column(logits, j).ref(tab.name)}),{column(logits, j).ref(tab.name)},0)-1"))


OPS = {name[3:]: fn for name, fn in vars(Lowering).items() if name.startswith("op_")}


def lower(spec, ckpt, tokens, about=(), vocab=None, typed=None):
    """Lower everything. Returns (sheets in order, defined names {name: Region}).

    `about` is a list of (label, value, defined name or None) rows shown on the tokens tab;
    `vocab`, each token's text, labels the embedding table, the logits and the predictions.
    With `typed` (a TypedPrompt) the token ids come from the in-sheet tokenizer: `tokens` only sets the
    number of positions, and "[last]" names read the position of the prompt's last token."""
    lowering = Lowering(spec, ckpt, tokens, vocab, typed)
    tokens_tab, tabs, weight_tabs = lowering.lower()
    info, r = tokens_tab.sheet, tokens_tab.row
    names = {}
    if vocab is not None:
        if not hasattr(lowering, "vocabulary"):
            raise XlgptError("template: with a vocabulary, some stage must read the token table (op embedding or unembed)")
        names["Vocabulary"] = lowering.vocabulary
    at_last = {}
    for name, (index, which) in spec.names.items():
        region = lowering.out[index]
        if isinstance(region, Heads):
            raise XlgptError(f"template: name {name} refers to a per-head output; name a single block")
        if which == "all":
            names[name] = region
        elif typed is None:
            names[name] = region.cell(0, region.width - 1)
        else:
            at_last[name] = region
    for name, region in at_last.items():  # typed: a cell that reads the prompt's last position, or says why not
        names[name] = Region(info.name, r, FIRST)
        label = "Predicted next token" if name == "PredictedToken" else f"{name} at the prompt's last token"
        info.add(Cells(r, 1, [[label, None, Formula(
            f'IF({typed.status}<>"ok",{typed.status},IF(N({typed.count})<1,"Type a prompt on the Prompt tab.",'
            f'INDEX({region.ref(info.name)},1,{typed.count})))')]], style=BOLD))
        r += 1
    if typed is not None:  # what the engines read beside the logits: the ids used and which are padding
        out_tab = tabs[names["Logits"].sheet]
        names["LogitsTokenIds"] = Region(out_tab.name, TOKEN_ROW, FIRST, 1, lowering.T)
        names["LogitsInPrompt"] = Region(out_tab.name, out_tab.prompt_row, FIRST, 1, lowering.T)
    elif "PredictedToken" in names:
        info.add(Cells(r, 1, [["Predicted next token", None, Formula("PredictedToken")]], style=BOLD))
    if "PredictedToken" in names and vocab is not None:
        info.add(Cells(names["PredictedToken"].top if typed else r, FIRST + 1, [[Formula(PREDICTED_TEXT)]], style=BOLD))
    r += 2
    info.add(Cells(r, 1, [["About this workbook"]], style=BOLD))
    for i, (label, value, name) in enumerate(about, r + 1):
        info.add(Cells(i, 1, [[label, None, value]]))
        if name:
            names[name] = Region(info.name, i, FIRST)
    sheets = [tokens_tab.sheet] + [t.sheet for t in tabs.values()] + [w.sheet for w in weight_tabs.values()]
    return sheets, names
