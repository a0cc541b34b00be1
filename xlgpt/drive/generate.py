"""Generate text with the workbook itself, one token at a time, checking every step against the reference.

A generation book is a token-ids book with as many positions as it may fill: the prompt's ids first, a pad
id (0) after them. Each step writes the last token into its position and LastPosition (and SampleStep),
reads the logits and the chosen token at the last real position, and checks them against the NumPy reference
(same tokens so far: logits within 1e-6, same token). Every block is one array formula per position and
each query reads the keys and values of positions 0..t only, so the padding never changes a real position's
result, and the step needs only the new position's column computed (see LibreOfficeSheet).

The token chosen: with temperature 0 the book's argmax (PredictedToken, read at LastPosition). A book with
sampling cells (SampledToken) gets Temperature, TopK, Seed and SampleStep (= the step, from 0) set by name
and its SampledToken read.
"""

import time

import numpy as np

from xlgpt.check.verify import TOLERANCE, checkpoint_for, reference_edits
from xlgpt.engines.formulas import check_formulas_size, package_model, quiet
from xlgpt.engines.ironcalc import IronCalcSheet
from xlgpt.engines.process import as_float
from xlgpt.engines.session import LibreOfficeSession, _as_array
from xlgpt.model import reference
from xlgpt.model.checkpoint import as_written
from xlgpt.package import XlgptError
from xlgpt.sheet import contract as C

PAD_ID = 0


def rect_ref(rect):
    """A Rect as LibreOffice's "Sheet.A1:B2" range address."""
    return f"{rect.sheet}.{rect.corners()}"


class LibreOfficeSheet:
    """The generation loop's view of a book open in a LibreOfficeSession. Edits wait for the next result(),
    which sends them and its reads in one round trip and calls no calculate(): with automatic calculation on,
    LibreOffice computes the cells read and their precedents only, so the new position's column (the earlier
    ones' keys and values are already computed) and the sampler, never the padding columns after it. A book that
    caches no results (`recalc` False) loads without computing anything: the first step then computes the
    prompt's columns, and the logits at its last position only."""

    def __init__(self, session, info, recalc=True):
        self.info, self.book = info, session.open(info.path, recalc=recalc)
        session.request("autocalc", doc=self.book.handle)  # a manual book (124M) computes on reading too
        self.load_seconds = self.book.load_seconds
        self.pending = []

    def set(self, name, value, index=None):
        self.pending.append((name, value, index))

    def result(self, position, chosen):
        """The logits at `position` (0-based) and the value of the name `chosen`."""
        key = rect_ref(self.info.names[C.LOGITS].col(position))
        got = self.book.batch(self.pending, [key, chosen], raw=True)
        self.pending = []
        return _as_array(*got[key])[:, 0], got[chosen][0][0][0]


class FormulasSheet:
    """The same view through the `formulas` package: every calculate() recomputes the whole book."""

    def __init__(self, info):
        check_formulas_size(info)
        t0 = time.perf_counter()
        with quiet():
            self.model = package_model().loads(str(info.path)).finish()
        self.info, self.inputs, self.solution = info, {}, None
        self.calculate()
        self.load_seconds = time.perf_counter() - t0

    def _key(self, rect):
        return f"'[{self.info.path.name}]{rect.sheet.upper()}'!{rect.ref(rect.sheet, absolute=False)}"

    def set(self, name, value, index=None):
        self.inputs[self._key(self.info.names[name].at(index or 0))] = value

    def calculate(self):
        with quiet():
            solution = self.model.calculate(inputs=dict(self.inputs))
        self.solution = {k.upper(): v for k, v in solution.items()}

    def _values(self, name):
        key = f"'[{self.info.path.name}]'!{name}".upper()
        if key not in self.solution:
            raise XlgptError(f"{self.info.path.name}: the formulas engine computed no value for {name}")
        return np.asarray(self.solution[key].value, dtype=object)

    def column(self, name, j):
        return np.array([as_float(v) for v in self._values(name)[:, j]])

    def put(self, name, rows):
        """Numbers over a whole defined name, as input values of the next calculate()."""
        rect = self.info.names[name]
        for i, row in enumerate(np.asarray(rows, dtype=float)):
            for j, v in enumerate(row):
                self.inputs[self._key(rect.cell(i, j))] = float(v)

    def read(self, names):
        return {n: np.array([[as_float(v) for v in row] for row in self._values(n)]) for n in names}

    def copy(self, pairs):
        """Each source name's computed values become the target's inputs (all read before any is written)."""
        values = self.read([source for source, _ in pairs])
        for source, target in pairs:
            self.put(target, values[source])

    def value(self, name):
        return self._values(name)[0, 0]

    def result(self, position, chosen):
        self.calculate()
        return self.column(C.LOGITS, position), self.value(chosen)


def check_sampling(temperature, top_k, seed):
    try:
        reference.sample([0.0], temperature, top_k, seed, 0)
    except ValueError as e:
        raise XlgptError(str(e))


def check_token_ids(info):
    """Generation writes token ids: a Prompt-cell book computes them from its prompt."""
    if info.typed:
        raise XlgptError(
            f"{info.path.name}: generate needs a token-ids workbook (xlgpt generate builds one from "
            f"--prompt or --tokens); this one tokenizes a Prompt cell"
        )


def check_book(info, prompt_ids, temperature=0.0, top_k=0, seed=1):
    """Refuse, before any slow work, a book generate cannot continue the prompt in: a Prompt-cell book, one
    without sampling cells for a temperature above 0, one the prompt leaves no position free in."""
    check_token_ids(info)
    check_sampling(temperature, top_k, seed)
    positions = len(info.tokens)
    if not prompt_ids:
        raise XlgptError("no prompt tokens")
    if len(prompt_ids) > positions:
        raise XlgptError(f"the prompt is {len(prompt_ids)} tokens; this workbook has {positions} positions")
    if temperature != 0 and C.SAMPLED_TOKEN not in info.names:
        raise XlgptError(
            f"{info.path.name}: this workbook has no sampling cells ({C.SAMPLED_TOKEN}); "
            f"only --temperature 0 (the argmax) works with it"
        )
    if len(prompt_ids) == positions:
        raise XlgptError(
            f"the workbook is full: the prompt's {len(prompt_ids)} tokens take all {positions} positions "
            f"{info.path.name} has; nothing to generate (a shorter prompt, or a book with more positions)"
        )


def generate(
    info,
    prompt_ids,
    steps,
    engine="libreoffice",
    temperature=0.0,
    top_k=0,
    seed=1,
    weights=None,
    timeout=3600,
    on_token=lambda token, text: None,
    on_stage=lambda msg: None,
    tok=None,
    cached=True,
):
    """Run the generation loop on a token-ids book (contract.BookInfo); `cached` False for a book whose formula
    cells cache no results (LibreOffice then loads it without computing it). Returns a result dict: tokens,
    reference_tokens, match, first_mismatch (a step, or None), context_full, seconds_per_token, ..."""

    check_book(info, prompt_ids, temperature, top_k, seed)
    positions, sampler = len(info.tokens), C.SAMPLED_TOKEN in info.names
    ckpt = checkpoint_for(info, weights)
    written, edits = as_written(ckpt), reference_edits(info, ckpt.config)
    tokens = list(prompt_ids)
    result = {
        "book": str(info.path),
        "engine": engine,
        "prompt_tokens": list(prompt_ids),
        "tokens": [],
        "reference_tokens": [],
        "match": True,
        "first_mismatch": None,
        "max_abs_logit_diff": 0.0,
        "context_full": False,
        "positions": positions,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
    }
    step_seconds, check_seconds = [], []  # the spreadsheet's part of each step; the reference's
    with LibreOfficeSession(timeout=timeout) if engine == "libreoffice" else _nothing() as lo:
        on_stage(f"loading {info.path.name} in {engine}")
        sheet = LibreOfficeSheet(lo, info, recalc=cached) if engine == "libreoffice" else LIVE_SHEETS[engine](info)
        result["load_seconds"] = round(sheet.load_seconds, 2)
        for i, t in enumerate(tokens):  # a --book may hold other ids: write the prompt's
            if info.tokens[i] != t:
                sheet.set(C.TOKEN_IDS, t, i)
        if sampler:
            for name, value in ((C.TEMPERATURE, temperature), (C.TOP_K, top_k), (C.SEED, seed)):
                sheet.set(name, value)
        for step in range(steps):
            if len(tokens) >= positions:
                result["context_full"] = True
                break
            t0 = time.perf_counter()
            sheet.set(C.LAST_POSITION, len(tokens))
            if sampler:
                sheet.set(C.SAMPLE_STEP, step)
            n = len(tokens)
            logits, chosen = sheet.result(n - 1, C.SAMPLED_TOKEN if sampler else C.PREDICTED_TOKEN)
            step_seconds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            expected = reference.logits(written, tokens, edits)[-1]
            want = reference.sample(expected, temperature, top_k, seed, step)
            check_seconds.append(time.perf_counter() - t0)
            finite = np.isfinite(logits).all() and logits.shape == expected.shape
            diff = float(np.abs(logits - expected).max()) if finite else float("inf")
            got = int(chosen) if isinstance(chosen, (int, float)) and float(chosen).is_integer() else None
            result["reference_tokens"].append(want)
            result["max_abs_logit_diff"] = max(result["max_abs_logit_diff"], diff)
            if not (diff <= TOLERANCE and got == want):
                result.update(
                    match=False,
                    first_mismatch=step,
                    mismatch={
                        "step": step,
                        "position": n - 1,
                        "token_id": got if got is not None else chosen,
                        "reference_token_id": want,
                        "max_abs_logit_diff": diff,
                    },
                )
                break
            tokens.append(got)
            result["tokens"].append(got)
            on_token(got, tok.decode([got]) if tok else str(got))
            if len(tokens) < positions:
                sheet.set(C.TOKEN_IDS, got, len(tokens) - 1)
        else:
            result["context_full"] = len(tokens) >= positions
        if lo is not None:
            result["peak_rss_mb"] = lo.peak_rss_mb()
    result["seconds_per_token"] = round(float(np.mean(step_seconds)), 4) if step_seconds else None
    result["first_token_seconds"] = round(step_seconds[0], 4) if step_seconds else None  # every prompt column
    result["seconds_per_token_after_first"] = (
        round(float(np.mean(step_seconds[1:])), 4) if len(step_seconds) > 1 else None
    )
    result["reference_seconds_per_token"] = round(float(np.mean(check_seconds)), 4) if check_seconds else None
    return result


LIVE_SHEETS = {"formulas": FormulasSheet, "ironcalc": IronCalcSheet}  # in this process


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
