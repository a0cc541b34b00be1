"""The book's input, as the template's input stage (op "tokens") writes it: fixed token ids a person may
edit, or a Prompt cell that the book tokenizes itself (the tokenizer's tabs, then ids padded to a fixed
number of positions). Everything that differs between the two kinds of book is here."""

from dataclasses import dataclass

import numpy as np

from xlgpt.sheet import contract as C
from xlgpt.sheet.layout import BOLD, INPUT, Formula
from xlgpt.sheet.styles import BIG, BIG_PERCENT
from xlgpt.tokenizer.tabs import add_tokenizer

# positions count from 0, LastPosition counts tokens: said beside it
LAST_POSITION_NOTE = "how many tokens the prediction reads: the last one sits at position LastPosition − 1"
# the predicted token's text, or the message the prediction cell shows instead of a token
PREDICTED_TEXT = f"IF(ISNUMBER({C.PREDICTED_TOKEN}),INDEX({C.VOCABULARY},{C.PREDICTED_TOKEN}+1),{C.PREDICTED_TOKEN})"


@dataclass
class Edits:
    """The interventions' starting values, written into the Interventions tab's cells: a switch per head and
    per MLP, and the steering vector with its layer, coefficient and where it came from."""

    head_switches: np.ndarray
    mlp_switches: np.ndarray
    steering_layer: int = 0
    steering_coefficient: float = 0.0
    steering_vector: np.ndarray = None
    source: str = "zeros (no steering)"

    @classmethod
    def none(cls, cfg):
        return cls(np.ones((cfg.n_layer, cfg.n_head)), np.ones(cfg.n_layer), 0, 0.0, np.zeros(cfg.n_embd))


@dataclass
class Contrast:
    """A patching book's other prompt: the corrupted token ids (as many as the clean ones), and the two tokens
    whose logit difference tells the runs apart."""

    corrupted: list
    answer: int
    foil: int
    heatmaps: dict = None  # xlgpt patch's: {component: [layer][position or head]}


@dataclass
class TokenIds:
    """Fixed token ids: yellow cells on the inputs tab (and a Contrast: a patching book)."""

    ids: list
    contrast: Contrast = None
    typed = False
    kind = C.TOKEN_INPUT
    capacity = None

    @property
    def positions(self):
        return len(self.ids)

    def last_position(self):
        return C.LAST_POSITION

    def fill(self, tab, header):
        tab.put(header.ids, [list(self.ids)], INPUT)
        if header.text is not None:
            tab.each(header.text, "INDEX({vocab},{id}+1)", BOLD, vocab=C.VOCABULARY, id=lambda _, t: header.ids.col(t))

    def add_tabs(self, book, vocabulary):
        return {}

    def prediction(self, info, logits_header, names):
        """PredictedToken: the prediction at the last position, repeated on the inputs tab."""
        last = info.field("LastPosition", self.positions, INPUT)
        info.put(last.cell(0, 1), [[LAST_POSITION_NOTE + ": edit it to predict after fewer tokens"]])
        cell = info.field("Predicted next token", Formula(at_position(names, C.LAST_POSITION)), BOLD)
        if C.VOCABULARY in names:
            info.put(cell.cell(0, 1), [[Formula(PREDICTED_TEXT)]], BOLD)
        info.skip()
        return {
            C.PREDICTED_TOKEN: cell,
            C.LAST_POSITION: last,
            **show_top_k(info, names),
            **sampling_cells(info, names),
        }


@dataclass
class PromptCell:
    """A Prompt cell tokenized by the book itself into `positions` token positions; the positions after the
    prompt's tokens are padding, and the prediction is read at the prompt's last token."""

    tokenizer: object
    text: str
    capacity: object  # tokenizer.bpe.Capacity
    positions: int
    typed = True
    kind = C.PROMPT_INPUT
    contrast = None

    def last_position(self):
        return C.LAST_POSITION

    def fill(self, tab, header):
        count, ids = C.SHEET_TOKEN_COUNT, C.SHEET_TOKEN_IDS
        tab.each(header.in_prompt, "IF(ISNUMBER({count}),IF({t}<{count},1,0),0)", BOLD, count=count, t=lambda _, t: t)
        # one position: the name is one cell, which Gnumeric's INDEX refuses (#REF!) where Excel's reads it
        tab.each(
            header.ids,
            "IF({used}=1,INDEX({ids},1,{n}),0)" if header.ids.width > 1 else "IF({used}=1,{ids},0)",
            BOLD,
            used=lambda _, t: header.in_prompt.col(t),
            ids=ids,
            n=lambda _, t: t + 1,
        )
        if header.text is not None:
            tab.each(
                header.text,
                'IF({used}=1,INDEX({vocab},{id}+1),"(padding)")',
                BOLD,
                vocab=C.VOCABULARY,
                used=lambda _, t: header.in_prompt.col(t),
                id=lambda _, t: header.ids.col(t),
            )

    def add_tabs(self, book, vocabulary):

        self.prompt_tab, names = add_tokenizer(
            book, self.tokenizer, self.capacity, self.text, C.VOCABULARY if vocabulary is not None else None
        )
        return names

    def prediction(self, info, logits_header, names):
        """PredictedToken reads the prediction at the prompt's last token, or says why there is none; the
        ids and prompt/padding row beside the logits let an engine read everything from one tab."""
        cell = info.field(
            "Predicted next token",
            Formula(
                f'IF({C.TOKENIZER_STATUS}<>"ok",{C.TOKENIZER_STATUS},IF(N({C.SHEET_TOKEN_COUNT})<1,'
                f'"Type a prompt on the Prompt tab.",{at_position(names, C.SHEET_TOKEN_COUNT)}))'
            ),
            BOLD,
        )
        info.put(cell.cell(0, 1), [[Formula(PREDICTED_TEXT)]], BOLD)
        info.skip()
        prompt = self.prompt_tab
        shown = prompt.field(
            "Predicted next token", Formula(f'IF(ISNUMBER({C.PREDICTED_TOKEN}),{C.PREDICTED_TOKEN},"")'), BOLD
        )
        prompt.put(shown.cell(0, 1), [[Formula(PREDICTED_TEXT)]], BOLD)
        prompt.note(
            f"(read at the prompt's last token; this book has {self.positions} token positions, "
            f"see the {info.name} tab)",
            gap=1,
        )
        last = info.field("LastPosition", Formula(f"MAX(1,N({C.SHEET_TOKEN_COUNT}))"))
        info.put(last.cell(0, 1), [[LAST_POSITION_NOTE]])
        return {
            C.PREDICTED_TOKEN: cell,
            C.LAST_POSITION: last,
            C.LOGITS_TOKEN_IDS: logits_header.ids,
            C.LOGITS_IN_PROMPT: logits_header.in_prompt,
            **show_top_k(prompt, names),
            **sampling_cells(prompt, names),
        }


def at_position(names, position):
    """Formula text of the prediction at a position (a name holding a column number from 1). A one-position
    book reads its one cell: Gnumeric's INDEX gives #REF! on a one-cell range."""
    predictions = names[C.PREDICTIONS]
    return predictions.ref() if predictions.width == 1 else f"INDEX({C.PREDICTIONS},1,{position})"


def show_top_k(tab, names):
    """The top-k table of the Output tab again, in large type, where the person typed their input."""
    if C.TOP_K_TOKENS not in names:
        return {}
    tab.title("The most probable next tokens (recalculate after editing: F9)")
    ids, probs = names[C.TOP_K_TOKENS], names[C.TOP_K_PROBABILITIES]
    table = tab.block([(f"{r + 1}.", None) for r in range(ids.height)], 2)
    text = f"INDEX({C.VOCABULARY},{{id}}+1)" if C.VOCABULARY in names else "{id}"
    tab.each(table.col(0), text, BIG, id=lambda r, _: ids.cell(r, 0))
    tab.each(table.col(1), "{p}", BIG_PERCENT, p=lambda r, _: probs.cell(r, 0))
    tab.widen(table.col(1), 14)
    tab.tall(table)
    return {}


def sampling_cells(tab, names):
    """Temperature, TopK, Seed and SampleStep (inputs), and the sampled token, when the book samples."""
    if C.SAMPLED_TOKEN not in names:
        return {}
    tab.title("Sampling: Temperature 0 takes the most probable token; above 0, a draw (TopK 0 = all tokens)")
    cells = {name: tab.field(name, value, INPUT) for name, value in C.SAMPLING_DEFAULTS.items()}
    sampled = tab.tall(tab.field("Sampled token", Formula(C.SAMPLED_TOKEN), BIG))
    if C.VOCABULARY in names:
        tab.put(
            sampled.cell(0, 1),
            [[Formula(f'IF(ISNUMBER({C.SAMPLED_TOKEN}),INDEX({C.VOCABULARY},{C.SAMPLED_TOKEN}+1),"")')]],
            BIG,
        )
    tab.skip()
    return cells
