"""The Guide tab, first in the book: what the book is, how to use it, what to try, and a table of contents
with a link to every tab and every block."""

import textwrap

from xlgpt.sheet import contract as C
from xlgpt.sheet.layout import LABEL_COL, Formula, Rect, Tab
from xlgpt.sheet.styles import BIG, LINK, SECTION

RECALCULATE = "then recalculate: F9 (in Excel, Ctrl+Alt+F9 recalculates everything; in LibreOffice, Ctrl+Shift+F9)"
GROUP_NAMES = {
    "prompt": "your input",
    "tokenizer": "the tokenizer, in formulas",
    "model": "the model's computation",
    "interpretability": "instruments: look inside, switch parts off, steer",
    "training": "training: the loss, then every derivative, from the output back to the embeddings",
    "weights": "the weights, one number per cell",
    "optimizer": "the step: each tensor's gradient, update (and Adam's moments), laid out like its weights",
    "tables": "the tokenizer's tables",
}


# A big book is set to manual calculation (contract.MANUAL_ABOVE): it opens at once, showing its cached values.
MANUAL_CALCULATION = (
    "Calculation is manual in this book: press F9 after editing. It opens showing the numbers "
    "xlgpt computed when it built the book; Ctrl+Alt+F9 (Excel) or Ctrl+Shift+F9 (LibreOffice) has "
    "the spreadsheet compute every cell itself."
)


def add_guide(book, names, inputs, description, calculation=C.AUTO):
    tab = book.add(
        Tab(
            "Guide",
            "GPT-2 in a spreadsheet: every number of the model is a formula you can read",
            "guide",
            widths={1: 34, 2: 4, 3: 90},
        )
    )
    tab.sheet.widths[4] = 14
    tab.skip()
    for label, value in description:
        tab.field(label, value)
    tab.skip()
    section(tab, "Use it")
    if calculation == C.MANUAL:
        tab.note(MANUAL_CALCULATION, fit=LINE)
    where = (
        f"the yellow Prompt cell on the {inputs_tab(book, C.PROMPT, names)} tab"
        if inputs.typed
        else f"the yellow token ids on the {inputs_tab(book, C.TOKEN_IDS, names)} tab"
    )
    lines = [
        f"1. Type into {where}, {RECALCULATE}.",
        "2. Follow the tabs from left to right: each one computes from the one before it, and every block's "
        "title says what it computes. The frozen rows at the top of a tab keep each column's position and "
        "token in view; grey columns are padding after the prompt. Row labels are the template's names for "
        "what a block holds (x: the residual stream; qkv; mlp_act: the GELU's output), as the formulas use them.",
        "3. Click a cell to read its formula. Defined names (Formulas › Name Manager) point at the results: "
        "Logits, Probabilities, PredictedToken, LensTopTokens, HeadSwitches, ...",
        "4. The numbers a cell shows before any recalculation are what its formula computed when xlgpt built "
        "the book; recalculating has the spreadsheet compute them itself, and xlgpt eval checks every result "
        "against its independent NumPy reference.",
    ]
    for line in lines:
        tab.note(line, fit=LINE)
    if C.VOCABULARY in names:
        tab.note(SYMBOLS, fit=LINE)
    tab.skip()
    # the cells the things to try change, in view while trying them
    for name, label in ((C.PREDICTED_TOKEN, "Predicted next token"), (C.SAMPLED_TOKEN, "Sampled token")):
        if name in names:
            cell = tab.tall(tab.field(label, Formula(name), BIG))
            if C.VOCABULARY in names:
                tab.put(cell.cell(0, 1), [[Formula(f'IF(ISNUMBER({name}),INDEX({C.VOCABULARY},{name}+1),"")')]], BIG)
    tab.skip()
    section(tab, "Things to try (each changes a cell you can watch; the xlgpt command does it in a copy)")
    for line in things_to_try(book, names, inputs):
        if isinstance(line, Formula):  # a line that depends on the book's cells
            tab.put(Rect(tab.name, tab.row, LABEL_COL), [[line]])
            tab.skip()
        else:
            tab.note(line, fit=LINE)
    tab.skip()
    section(tab, "Contents (click to go there)")
    for group in ("prompt", "tokenizer", "model", "interpretability", "training", "weights", "optimizer", "tables"):
        tabs = [t for t in book.tabs.values() if t.group == group]
        if not tabs:
            continue
        tab.title(GROUP_NAMES[group])
        for t in tabs:
            tab.link(tab.put(tab.line(None, 1), [[t.name]], LINK), t)
            if group in ("model", "interpretability", "training"):
                for text, cell in t.titles:
                    tab.link(tab.put(tab.line(None, 1), [["    " + text]], LINK), cell)
    return tab


# the Guide's columns A to D hold about this many characters: longer text goes on to the next row
LINE = 140
SYMBOLS = "In token texts, ␣ is a space and ↵ a line break (a token often starts with a space: '␣thou' is \" thou\")."


def either(condition, if_true, if_false):
    """Formulas showing one text or the other, as fitted lines, by a condition on the book's cells."""
    a, b = (textwrap.wrap(t, LINE, subsequent_indent="    ") for t in (if_true, if_false))
    a, b = (lines + [""] * (max(len(a), len(b)) - len(lines)) for lines in (a, b))
    quote = lambda text: '"' + text.replace('"', '""') + '"'
    return [Formula(f"IF({condition},{quote(x)},{quote(y)})") for x, y in zip(a, b)]


def section(tab, text):
    tab.banner(text, SECTION)


def inputs_tab(book, name, names):
    return names[name].sheet


def things_to_try(book, names, inputs):
    """What to change, where its effect shows, and the xlgpt command that shows it too. A line that depends on
    the book's cells (is there a steering vector?) is a Formula."""
    tabs = book.tabs
    out = []
    if inputs.typed:
        out.append(
            "Change the prompt on the Prompt tab and recalculate: the predicted next token above and the Prompt "
            'tab\'s top-5 table change (xlgpt eval book.xlsx --prompt "Shall I compare thee" prints both).'
        )
    layer0 = next((t for t in tabs if t.startswith("Layer 0")), None)
    if layer0:
        # a typed book computes no product at a padding position (Ctx.product): its attention there is even
        padding = "their products are zeros, not computed" if inputs.typed else "computed like the rest"
        out.append(
            f'On the {layer0} tab, find the attention heatmaps ("attention weights, head 0", ...): each column is a '
            "query token, each row a key it may look at; dark blue is where it looks. Rows and columns after the "
            f"prompt are padding: {padding} (the book has room for a longer prompt), read by nothing."
        )
    if "Logit lens" in tabs:
        where = (
            "read down its column (this book's lens reads the prompt's last token only)"
            if C.LENS in names
            else "read down a column"
        )
        out.append(
            f"On the Logit lens tab, {where}: what the model would predict after the embeddings (still "
            "the input token itself: nothing has mixed in yet), after layer 0, and so on; the last row is its real "
            "prediction (xlgpt eval prints the lens at the prompt's last token)."
        )
    if C.HEAD_SWITCHES in names:
        out.append(
            "On the Interventions tab, set a head's switch to 0 (ablate it: layer 0, head 2) or an MLP's, "
            "recalculate, and watch the predicted next token above "
            '(xlgpt eval book.xlsx --set "HeadSwitches[0,2]=0").'
        )
        out += either(
            f"SUMPRODUCT(ABS({C.STEERING_VECTOR}))=0",
            'SteeringVector is zeros in this book: build one first (xlgpt build --steer-from " thee" --steer-to '
            '" you", or --steer-feature N), then put 1 in SteeringCoefficient on the Interventions tab.',
            "Put 1 (or 4) in SteeringCoefficient on the Interventions tab: it adds the SteeringVector noted there "
            "to the residual stream entering block SteeringLayer; watch the predicted next token above "
            "(xlgpt eval book.xlsx --set SteeringCoefficient=1).",
        )
    if C.ATTRIBUTION_TOKEN in names:
        out.append(
            "On the Attribution tab, see which heads and MLPs push the target token's logit up (blue) or down "
            "(red); type another token id as the target, e.g. 198 (xlgpt eval book.xlsx --set AttributionToken=198 "
            "prints the largest terms)."
        )
    if C.INDUCTION_SCORES in names:
        out.append(
            "On the Heads tab, each head's previous-token, induction and duplicate-token score: how much of its "
            "attention goes where a head of that kind looks (TransformerLens' detect_head). A prompt that repeats "
            "itself shows induction heads: xlgpt build --repeat-random 8 makes one (8 random tokens, twice); the model "
            "shakespeare-induction has them (--weights shakespeare-induction)."
        )
    if C.PATCHED_METRIC in names:
        out.append(
            "On the Patching tab, set PatchComponent to 1 and PatchPosition to where the prompts differ: the "
            "patched run takes the clean run's residual stream there, and PatchedMetric says how much of the clean "
            "LogitDiff it restores (1: all). xlgpt patch book.xlsx --out patched.xlsx tries every patch and fills "
            "the heatmaps below it; attribution patching, under them, estimates all of them at once from the "
            "corrupted run's gradient (the Corrupted … backward tabs)."
        )
    if C.LOSS in names:
        out += [
            "On the Loss tab, the Loss cell is the mean of each position's −log p(target). The tabs after it "
            "run the chain rule backwards, Output backward to Embeddings backward: every block is one "
            "derivative, its title the formula, its numbers in scientific notation (1.23E-04: 0.000123), since "
            "gradients span many orders of magnitude.",
            "The 'gradients' tabs hold ∂L/∂w for every weight, in the same cell as the weight on its weights "
            "tab; the 'updated' tabs hold the weights after one step. Take the step by hand: copy an "
            "'updated' tab's cells and paste them as values over its weights tab, recalculate, and watch "
            "the Loss fall (xlgpt train does that for every tab, step after step).",
            f"Change {C.TARGETS} on the Loss tab, or {C.LEARNING_RATE}, recalculate, and see the gradients and "
            "the update change (xlgpt eval prints the Loss first).",
        ]
    if C.TEMPERATURE in names:
        where = names[C.TEMPERATURE].sheet
        out.append(
            f"On the {where} tab, set Temperature to 0.8 and Seed to 2: the sampled token above is a draw instead "
            "of the most probable token (xlgpt eval book.xlsx --set Temperature=0.8 --set Seed=2); change Seed or "
            "SampleStep for another draw. A value out of range (Temperature −1) shows a message in its place."
        )
    return out
