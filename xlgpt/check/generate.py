"""Generate text with the workbook itself, one token at a time, checking every step against the reference.

A generation book is a token-ids book with as many positions as it may fill (by default the model's
context): the prompt's ids first, a pad id (0) after them. Each step reads the logits and the chosen token
at the last real position, checks them against the NumPy reference (same tokens so far: logits within
1e-6, same token), and writes the token into the next position's TokenIds cell. Positions are causal, so
the padding never changes a real position's result; and once the compiler lays blocks out one array
formula per position, writing position t recomputes only the columns that read it.

The token chosen: with temperature 0 the book's argmax (Predictions at the last real position). A book with
sampling cells (SampledToken) gets Temperature, TopK, Seed and SampleStep (= the step, from 0) set by name
and its SampledToken read. NOTE: SampledToken (like PredictedToken) is read at the book's last position;
in a padded generation book that is only the last real position once the compiler lets the book know the
prompt's length (until then, sampling at temperature > 0 is checked, and will disagree, on padded books).
"""
import time

import numpy as np

from .. import XlgptError
from .. import contract as C
from . import reference
from .verify import TOLERANCE, as_written, checkpoint_for, reference_edits

PAD_ID = 0


def rect_ref(rect):
    """A Rect as LibreOffice's "Sheet.A1:B2" range address."""
    return f"{rect.sheet}.{rect.corners()}"


class LibreOfficeSheet:
    """The generation loop's view of a book open in a LibreOfficeSession."""

    def __init__(self, session, info):
        self.info, self.book = info, session.open(info.path)
        self.load_seconds = self.book.load_seconds

    def set(self, name, value, index=None):
        self.book.set(name, value, index)

    def calculate(self):
        self.book.calculate()

    def column(self, name, j):
        """Column j (0-based) of a defined name, as a 1-D float array."""
        key = rect_ref(self.info.names[name].col(j))
        return self.book.read([key])[key][:, 0]

    def value(self, name):
        return self.book.read([name], raw=True)[name][0][0][0]


class FormulasSheet:
    """The same view through the `formulas` package: every calculate() recomputes the whole book."""

    def __init__(self, info):
        import contextlib
        import io

        from .engines import check_formulas_size

        check_formulas_size(info)
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            import formulas

            self.model = formulas.ExcelModel().loads(str(info.path)).finish()
        self.info, self.inputs, self.solution = info, {}, None
        self.calculate()
        self.load_seconds = time.perf_counter() - t0

    def _key(self, rect):
        return f"'[{self.info.path.name}]{rect.sheet.upper()}'!{rect.ref(rect.sheet, absolute=False)}"

    def set(self, name, value, index=None):
        rect = self.info.names[name]
        self.inputs[self._key(rect.cell(0, index or 0) if rect.height == 1 else rect.cell(index or 0, 0))] = value

    def calculate(self):
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):
            solution = self.model.calculate(inputs=dict(self.inputs))
        self.solution = {k.upper(): v for k, v in solution.items()}

    def _values(self, name):
        key = f"'[{self.info.path.name}]'!{name}".upper()
        if key not in self.solution:
            raise XlgptError(f"{self.info.path.name}: the formulas engine computed no value for {name}")
        return np.asarray(self.solution[key].value, dtype=object)

    def column(self, name, j):
        from .engines import _as_float

        return np.array([_as_float(v) for v in self._values(name)[:, j]])

    def put(self, name, rows):
        """Numbers over a whole defined name, as input values of the next calculate()."""
        rect = self.info.names[name]
        for i, row in enumerate(np.asarray(rows, dtype=float)):
            for j, v in enumerate(row):
                self.inputs[self._key(rect.cell(i, j))] = float(v)

    def read(self, names):
        from .engines import _as_float

        return {n: np.array([[_as_float(v) for v in row] for row in self._values(n)]) for n in names}

    def copy(self, pairs):
        """Each source name's computed values become the target's inputs (all read before any is written)."""
        values = self.read([source for source, _ in pairs])
        for source, target in pairs:
            self.put(target, values[source])

    def value(self, name):
        return self._values(name)[0, 0]


def check_sampling(temperature, top_k, seed):
    try:
        reference.sample([0.0], temperature, top_k, seed, 0)
    except ValueError as e:
        raise XlgptError(str(e))


def generate(info, prompt_ids, steps, engine="libreoffice", temperature=0.0, top_k=0, seed=1, weights=None,
             timeout=3600, on_token=lambda token, text: None, on_stage=lambda msg: None, tok=None):
    """Run the generation loop on a token-ids book (contract.BookInfo). Returns a result dict: tokens,
    reference_tokens, match, first_mismatch (a step, or None), context_full, seconds_per_token, ..."""
    from .session import LibreOfficeSession

    if info.typed:
        raise XlgptError(f"{info.path.name}: generate needs a token-ids workbook (xlgpt generate builds one from "
                         f"--prompt or --tokens); this one tokenizes a Prompt cell")
    check_sampling(temperature, top_k, seed)
    positions = len(info.tokens)
    if not prompt_ids:
        raise XlgptError("no prompt tokens")
    if len(prompt_ids) > positions:
        raise XlgptError(f"the prompt is {len(prompt_ids)} tokens; this workbook has {positions} positions")
    sampler = C.SAMPLED_TOKEN in info.names
    if temperature != 0 and not sampler:
        raise XlgptError(f"{info.path.name}: this workbook has no sampling cells ({C.SAMPLED_TOKEN}); "
                         f"only --temperature 0 (the argmax) works with it")
    ckpt = checkpoint_for(info, weights)
    written, edits = as_written(ckpt), reference_edits(info, ckpt.config)
    tokens = list(prompt_ids)
    result = {"book": str(info.path), "engine": engine, "prompt_tokens": list(prompt_ids), "tokens": [],
              "reference_tokens": [], "match": True, "first_mismatch": None, "max_abs_logit_diff": 0.0,
              "context_full": False, "positions": positions, "temperature": temperature, "top_k": top_k,
              "seed": seed}
    step_seconds = []
    with (LibreOfficeSession(timeout=timeout) if engine == "libreoffice" else _nothing()) as lo:
        on_stage(f"loading {info.path.name} in {engine}")
        sheet = LibreOfficeSheet(lo, info) if engine == "libreoffice" else FormulasSheet(info)
        result["load_seconds"] = round(sheet.load_seconds, 2)
        changed = False
        for i, t in enumerate(tokens):  # a --book may hold other ids: write the prompt's
            if info.tokens[i] != t:
                sheet.set(C.TOKEN_IDS, t, i)
                changed = True
        if sampler:
            for name, value in ((C.TEMPERATURE, temperature), (C.TOP_K, top_k), (C.SEED, seed)):
                sheet.set(name, value)
        for step in range(steps):
            if len(tokens) >= positions:
                result["context_full"] = True
                break
            t0 = time.perf_counter()
            sheet.set(C.LAST_POSITION, len(tokens))
            changed = True
            if sampler:
                sheet.set(C.SAMPLE_STEP, step)
            if changed:
                sheet.calculate()
                changed = False
            n = len(tokens)
            logits = sheet.column(C.LOGITS, n - 1)
            chosen = sheet.value(C.SAMPLED_TOKEN if sampler else C.PREDICTED_TOKEN)
            step_seconds.append(time.perf_counter() - t0)
            expected = reference.logits(written, tokens, edits)[-1]
            want = reference.sample(expected, temperature, top_k, seed, step)
            finite = np.isfinite(logits).all() and logits.shape == expected.shape
            diff = float(np.abs(logits - expected).max()) if finite else float("inf")
            got = int(chosen) if isinstance(chosen, (int, float)) and float(chosen).is_integer() else None
            result["reference_tokens"].append(want)
            result["max_abs_logit_diff"] = max(result["max_abs_logit_diff"], diff)
            if not (diff <= TOLERANCE and got == want):
                result.update(match=False, first_mismatch=step, mismatch={
                    "step": step, "position": n - 1, "token_id": got if got is not None else chosen,
                    "reference_token_id": want, "max_abs_logit_diff": diff})
                break
            tokens.append(got)
            result["tokens"].append(got)
            on_token(got, tok.decode([got]) if tok else str(got))
            if len(tokens) < positions:
                sheet.set(C.TOKEN_IDS, got, len(tokens) - 1)
                changed = True
        else:
            result["context_full"] = len(tokens) >= positions
    result["seconds_per_token"] = round(float(np.mean(step_seconds)), 4) if step_seconds else None
    result["seconds_per_token_after_first"] = round(float(np.mean(step_seconds[1:])), 4) if len(step_seconds) > 1 else None
    return result


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
