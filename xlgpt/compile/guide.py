"""The Guide tab, first in the book: what the book is, how to use it, what to try, and a table of contents
with a link to every tab and every block."""

from xlgpt.sheet import contract as C
from xlgpt.sheet.layout import Formula, Tab
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
        tab.note(MANUAL_CALCULATION)
    where = (
        f"the yellow Prompt cell on the {inputs_tab(book, C.PROMPT, names)} tab"
        if inputs.typed
        else f"the yellow token ids on the {inputs_tab(book, C.TOKEN_IDS, names)} tab"
    )
    lines = [
        f"1. Type into {where}, {RECALCULATE}.",
        "2. Follow the tabs from left to right: each one computes from the one before it, and every block's "
        "title says what it computes. The frozen rows at the top of a tab keep each column's position and "
        "token in view; grey columns are padding after the prompt.",
        "3. Click a cell to read its formula. Defined names (Formulas › Name Manager) point at the results: "
        "Logits, Probabilities, PredictedToken, LensTopTokens, HeadSwitches, ...",
        "4. The numbers a cell shows before any recalculation are what its formula computed when xlgpt built "
        "the book; recalculating has the spreadsheet compute them itself, and xlgpt eval checks every result "
        "against its independent NumPy reference.",
    ]
    for line in lines:
        tab.note(line)
    tab.skip()
    if C.PREDICTED_TOKEN in names:
        cell = tab.tall(tab.field("Predicted next token", Formula(C.PREDICTED_TOKEN), BIG))
        if C.VOCABULARY in names:
            tab.put(
                cell.cell(0, 1),
                [[Formula(f'IF(ISNUMBER({C.PREDICTED_TOKEN}),INDEX({C.VOCABULARY},{C.PREDICTED_TOKEN}+1),"")')]],
                BIG,
            )
        tab.skip()
    section(tab, "Things to try")
    for line in things_to_try(book, names, inputs):
        tab.note(line)
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


def section(tab, text):
    tab.banner(text, SECTION)


def inputs_tab(book, name, names):
    return names[name].sheet


def things_to_try(book, names, inputs):
    tabs = book.tabs
    out = []
    if inputs.typed:
        out.append("Change the prompt, recalculate, and watch the Prompt tab's top-5 table move.")
    layer0 = next((t for t in tabs if t.startswith("Layer 0")), None)
    if layer0:
        out.append(
            f'On the {layer0} tab, find the attention heatmaps ("head 0", "head 1", ...): each column is a '
            "query token, each row a key it can look at; dark blue is where it looks."
        )
    if "Logit lens" in tabs:
        out.append(
            "On the Logit lens tab, read down a column: what the model would predict after the "
            "embeddings, after layer 0, and so on; the last row is its real prediction."
        )
    if C.HEAD_SWITCHES in names:
        out.append(
            "On the Interventions tab, set a head's switch to 0 (ablate it) or an MLP's switch to 0, "
            "recalculate, and see whether the prediction changes."
        )
        out.append(
            "Put a number in SteeringCoefficient (e.g. 4) to add the steering vector to the residual "
            "stream entering block SteeringLayer."
        )
    if C.ATTRIBUTION_TOKEN in names:
        out.append(
            "On the Attribution tab, see which heads and MLPs push the predicted token's logit up "
            "(blue) or down (red); type another token id as the target."
        )
    if C.LOSS in names:
        out += [
            "On the Loss tab, the Loss cell is the mean of each position's −log p(target). The tabs after it "
            "run the chain rule backwards, Output backward to Embeddings backward: every block is one "
            "derivative, its title the formula.",
            "The 'gradients' tabs hold ∂L/∂w for every weight, in the same cell as the weight on its weights "
            "tab; the 'updated' tabs hold the weights after one step. Take the step by hand: copy an "
            "'updated' tab's cells and paste them as values over its weights tab, recalculate, and watch "
            "the Loss fall (xlgpt train does that for every tab, step after step).",
            f"Change {C.TARGETS} on the Loss tab, or {C.LEARNING_RATE}, recalculate, and see the gradients and "
            "the update change.",
        ]
    if C.TEMPERATURE in names:
        out.append(
            "Set Temperature above 0 (e.g. 0.8) and change Seed or SampleStep to sample instead of "
            "taking the most probable token."
        )
    return out
