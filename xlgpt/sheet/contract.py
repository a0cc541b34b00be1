"""The book's interface: every defined name a workbook exposes and every metadata cell it carries.

The compiler writes them, and eval, the engines and the tokenizer read them, all through this module, so a
name is spelled once. People use the same names: type =PredictedToken or =INDEX(Logits,1,1) anywhere.
"""

import re
from dataclasses import dataclass

# --- results: every model book ----------------------------------------------------------------------
TOKEN_IDS = "TokenIds"  # the input token id at each position (one row)
LOGITS = "Logits"  # one row per vocabulary entry, one column per position
PREDICTIONS = "Predictions"  # the argmax of each position's logits (one row)
PREDICTED_TOKEN = "PredictedToken"  # the prediction at the prompt's last token (one cell)
LAST_POSITION = "LastPosition"  # the column (1-based) of the prompt's last token: every "at the last token"
# result reads there; in a token-ids book an input (generation moves it)
VOCABULARY = "Vocabulary"  # each token's text, by id (one column), when the model has a tokenizer
# the template stages these names show: a template must have stages of these names
STAGE_OF = {TOKEN_IDS: "tokens", LOGITS: "logits", PREDICTIONS: "prediction"}

# --- prompt-cell books: the sheet tokenizes its Prompt cell itself -------------------------------------
PROMPT = "Prompt"  # the text cell a person types into
TOKENIZER_STATUS = "TokenizerStatus"  # "ok", or why the text does not fit the sheet
SHEET_TOKEN_COUNT = "SheetTokenCount"  # how many tokens the sheet made
SHEET_TOKEN_IDS = "SheetTokenIds"  # the ids, "" after the last one (one row)
# beside the logits, so one engine export reads everything: the ids used, and 1/0 for prompt/padding
LOGITS_TOKEN_IDS, LOGITS_IN_PROMPT = "LogitsTokenIds", "LogitsInPrompt"
TOKENIZER_OUTPUTS = (TOKENIZER_STATUS, SHEET_TOKEN_COUNT, SHEET_TOKEN_IDS)
# the tokenizer's lookup tables
MERGE_TABLE, BYTE_TABLE, CLASS_TABLE = "MergeTable", "ByteTable", "ClassTable"

# --- what a learner reads: probabilities, top-k, the logit lens (Output and Logit lens tabs) ------------
PROBABILITIES = "Probabilities"  # softmax of each position's logits, same shape as Logits
TOP_K_TOKENS, TOP_K_PROBABILITIES = "TopKTokens", "TopKProbabilities"  # at the prompt's last token (column)
LENS_TOP_TOKENS = "LensTopTokens"  # rows: after the embeddings, after layer 0 .. L-1;
LENS_TOP_PROBABILITIES = "LensTopProbabilities"  # columns: positions (one, the last, in a LENS_LAST book)

# --- a sparse autoencoder's features (Features tab) ----------------------------------------------------
FEATURE_ACTIVATIONS = "FeatureActivations"  # one row per feature, one column per position
TOP_FEATURES = "TopFeatures"  # the strongest features' indices: rows top 1..3, columns positions

# --- sampling (Prompt tab) ---------------------------------------------------------------------------
TEMPERATURE, TOP_K, SEED, SAMPLE_STEP = "Temperature", "TopK", "Seed", "SampleStep"  # inputs
SAMPLED_TOKEN = "SampledToken"  # the sampled id (or a message), at the prompt's last token

# --- interventions (Interventions tab) and direct logit attribution (Attribution tab) ------------------
HEAD_SWITCHES, MLP_SWITCHES = "HeadSwitches", "MlpSwitches"  # layers x heads; layers x 1; default 1
STEERING_LAYER, STEERING_COEFFICIENT, STEERING_VECTOR = "SteeringLayer", "SteeringCoefficient", "SteeringVector"
ATTRIBUTION_TOKEN = "AttributionToken"  # the target token (default: the predicted one)
ATTRIBUTION_DIRECTION = "AttributionDirection"  # (ln_f.weight * wte[target], centred) / sigma: a column
ATTRIBUTION_POSITION = "AttributionPosition"  # the column of the prompt's last token (1-based)
ATTRIBUTION_TABLE = "AttributionTable"  # rows: embeddings, steering, layer 0..; columns: heads, bias, MLP
ATTRIBUTION_OTHER = "AttributionOther"  # rows: embeddings, steering, ln_f.bias · wte[target]
ATTRIBUTION_LOGIT = "AttributionLogit"  # the target's logit, which the table plus the bias term adds up to

# --- head detectors (Heads tab): layers x heads, TransformerLens' detect_head ("mul") on the book's own prompt
PREVIOUS_TOKEN_SCORES = "PreviousTokenScores"  # attention to the previous position
INDUCTION_SCORES = "InductionScores"  # to the position after an earlier copy of the current token
DUPLICATE_TOKEN_SCORES = "DuplicateTokenScores"  # to earlier copies of the current token
HEAD_SCORES = (PREVIOUS_TOKEN_SCORES, INDUCTION_SCORES, DUPLICATE_TOKEN_SCORES)

# --- activation patching (Patching tab and the Corrupted/Patched tabs of a book built with --corrupted) -----
CORRUPTED_TOKEN_IDS = "CorruptedTokenIds"  # the corrupted prompt's ids (one row, as many as TokenIds)
ANSWER_TOKEN, FOIL_TOKEN = "AnswerToken", "FoilToken"  # the logit difference's two token ids
PATCH_COMPONENT = "PatchComponent"  # a number: its meaning is PATCH_COMPONENTS[number] (0: patch nothing)
PATCH_COMPONENTS = ("nothing", "resid_pre", "attn_out", "mlp_out", "head")  # the reference's names
PATCH_LAYER, PATCH_POSITION, PATCH_HEAD = "PatchLayer", "PatchPosition", "PatchHead"
LOGIT_DIFF = "LogitDiff"  # answer logit − foil logit at LastPosition: the clean, corrupted and patched run
PATCHED_METRIC = "PatchedMetric"  # (patched − corrupted) / (clean − corrupted)
PATCH_CELLS = (PATCH_COMPONENT, PATCH_LAYER, PATCH_POSITION, PATCH_HEAD)
# xlgpt patch's heatmaps: PatchedMetric of every patch, [layer, position] (the heads': [layer, head]); the
# compiler leaves them empty, xlgpt patch writes its numbers in, eval checks them against the reference's
PATCHING_HEATMAPS = {
    "resid_pre": "PatchingResidPre",
    "attn_out": "PatchingAttnOut",
    "mlp_out": "PatchingMlpOut",
    "head": "PatchingHeads",
}
PATCHING_STATUS = "PatchingStatus"  # one text cell: whether xlgpt patch has filled the heatmaps, and how
# attribution patching, in formulas: each patch to first order (the corrupted run's gradient of LogitDiff times
# clean − corrupted activation, over clean − corrupted LogitDiff), laid out as the heatmaps
ATTRIBUTION_PATCHING = {component: "Attribution" + name for component, name in PATCHING_HEATMAPS.items()}
ATTRIBUTION_CORRELATION = "AttributionCorrelation"  # one cell per component: CORREL(heatmap, attribution)
RUNS = ("Corrupted", "Patched")  # the runs besides the clean one: their tabs are the model's, prefixed

# --- training (a book built with --train: Loss tab, backward tabs, gradients and the optimizer's step) -----
TARGETS = "Targets"  # the next token at each position, which the loss scores (one row)
LOSS = "Loss"  # mean cross-entropy over the positions (one cell)
LOSS_HISTORY = "LossHistory"  # the loss of each step of xlgpt train (one column), in the book it writes
OPTIMIZER = "Optimizer"  # "sgd" or "adamw" (one cell, as built)
LEARNING_RATE, WEIGHT_DECAY = "LearningRate", "WeightDecay"
ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_STEP = "AdamBeta1", "AdamBeta2", "AdamEps", "AdamStep"  # step: t of this update
OPTIMIZER_CELLS = (LEARNING_RATE, WEIGHT_DECAY, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_STEP)
# each tensor's gradient, updated value and Adam moments (before and after the step) have the weight's layout,
# on tabs beside its weights tab, named after its weight name: Grad_L0_attn_c_attn_weight_T, New_..., AdamM_, ...
GRADIENT, UPDATED, ADAM_M, ADAM_V, NEW_ADAM_M, NEW_ADAM_V = (
    "Grad_",
    "New_",
    "AdamM_",
    "AdamV_",
    "NewAdamM_",
    "NewAdamV_",
)

EDIT_CELLS = (HEAD_SWITCHES, MLP_SWITCHES, STEERING_LAYER, STEERING_COEFFICIENT, STEERING_VECTOR)
SAMPLING_CELLS = (TEMPERATURE, TOP_K, SEED, SAMPLE_STEP)
SAMPLING_DEFAULTS = {TEMPERATURE: 0, TOP_K: 0, SEED: 1, SAMPLE_STEP: 0}  # a new book's: the argmax

# --- metadata cells (the About block on the Tokens tab) ----------------------------------------------
CHECKPOINT = "Checkpoint"  # the checkpoint as --weights takes it
SAE_SOURCE = "SaeSource"  # the SAE as --sae takes it (empty: the bundled one), when the book has one
WEIGHTS_SHA256 = "WeightsSha256"  # sha256 of its model.safetensors
BOOK_INPUT = "BookInput"  # TOKEN_INPUT or PROMPT_INPUT
TOKEN_INPUT, PROMPT_INPUT = "token ids", "prompt cell"
CAPACITY = ("CapacityCharacters", "CapacityBytes", "CapacityRounds", "CapacityTokens")
CALCULATION = "Calculation"  # MANUAL when the book's calculation is manual (no cell: automatic)
AUTO, MANUAL = "auto", "manual"
# A book of more formula cells than this (an array formula counts each cell it fills) gets manual calculation
# unless told otherwise. The default book (~0.5M) recalculates in LibreOffice in a few seconds; a 124M book
# (tens of millions) would keep Excel busy for minutes on opening, before showing anything, and after every edit.
MANUAL_ABOVE = 1_000_000
LENS = "Lens"  # LENS_LAST when the logit lens reads only the prompt's last token (no cell: every position)
LENS_EVERY, LENS_LAST = "every position", "last position"
# A lens of more cells than this (residual streams x vocabulary x positions) reads only the last position unless
# told otherwise: at 124M, 16 positions, the lens at every position is 10.5M formula cells and most of a full
# recalculation (13 unembedding products per position); at the last position it is 0.65M.
LENS_EVERY_POSITION_UP_TO = 2_000_000


def weight_name(tensor, transposed=False):
    """The defined name of a checkpoint tensor on its weights tab: h.0.attn.c_attn.weight -> L0_attn_c_attn_weight
    (with _T when the tab holds its transpose), wte.weight -> wte_weight."""
    name = re.sub(r"^h\.(\d+)\.", r"L\1_", tensor).replace(".", "_")
    return name + ("_T" if transposed else "")


def weight_name_in(names, tensor, prefix=""):
    """(prefix + the tensor's defined name, transposed?) as `names` (a book's defined names, or anything keyed by
    them) hold it, its weights tab storing it as it is or transposed; (None, False) when absent."""
    for transposed in (False, True):
        name = prefix + weight_name(tensor, transposed)
        if name in names:
            return name, transposed
    return None, False


def numbered(name, i):
    """The name of prompt i's result in a batch tokenizer book (Prompt_1, SheetTokenIds_1, ...)."""
    return f"{name}_{i}"


@dataclass(frozen=True)
class About:
    """What a book records about itself, besides its formulas."""

    checkpoint: str
    weights_sha256: str
    input: str = TOKEN_INPUT
    capacity: tuple = None  # (characters, UTF-8 bytes, merge rounds, tokens) of a prompt-cell book
    sae: str = None  # the SAE's source as --sae takes it ("bundled" for the bundled model's)
    calculation: str = None  # AUTO or MANUAL; None: chosen by the book's size when it is compiled
    lens: str = None  # LENS_EVERY or LENS_LAST; None: chosen by the lens's size when it is compiled (lens_for)

    def rows(self):
        """(label, value, defined name) rows, as the About block shows them."""
        rows = [
            ("checkpoint", self.checkpoint, CHECKPOINT),
            ("weights sha256", self.weights_sha256, WEIGHTS_SHA256),
            ("input", self.input, BOOK_INPUT),
        ]
        if self.sae:
            rows.append(("sparse autoencoder", self.sae, SAE_SOURCE))
        if self.calculation == MANUAL:  # only then: books of automatic calculation stay as they were
            rows.append(("calculation", MANUAL, CALCULATION))
        if self.lens == LENS_LAST:  # likewise
            rows.append(("logit lens", LENS_LAST, LENS))
        if self.capacity:
            labels = ("characters", "UTF-8 bytes", "merge rounds", "tokens")
            rows += [
                (f"tokenizer capacity: {label}", n, name) for label, n, name in zip(labels, self.capacity, CAPACITY)
            ]
        return rows


def write_about(tab, about, description=()):
    """The About block at the tab's next rows: `description` (label, value) rows, then the recorded
    metadata. Returns the defined names of the metadata cells."""
    tab.title("About this workbook")
    for label, value in description:
        tab.field(label, value)
    return {name: tab.field(label, value) for label, value, name in about.rows()}
