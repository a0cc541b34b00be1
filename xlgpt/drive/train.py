"""xlgpt train: training steps computed by the spreadsheet, the copy-paste epoch done by the tool.

A training book (build --train) computes one step: the loss of a window, every gradient, the updated weights.
Each step here types the window's tokens and targets into the live book, recalculates, reads the Loss, then
copies the "updated" tabs over the weights tabs (and Adam's new moments over its moments), inside LibreOffice.
The reference's own training loop (check/backward.py) takes the same steps beside it: a step whose loss
differs stops the run. At the end the weights are read back, checked, and saved as a checkpoint.
"""

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np

from xlgpt.check.verify import TOLERANCE, from_layout
from xlgpt.compile.backward import Training
from xlgpt.compile.build import build
from xlgpt.drive.generate import LIVE_SHEETS
from xlgpt.engines.session import LibreOfficeSession
from xlgpt.model import backward
from xlgpt.model.checkpoint import as_written, check_new_dir, load, write
from xlgpt.package import XlgptError
from xlgpt.safefile import announce, atomic_dir
from xlgpt.sheet import contract as C

BOOK = "train.xlsx"  # the workbook a run leaves beside its checkpoint


class Diverged(XlgptError):
    """The spreadsheet's training left the reference's: a mismatch (exit 1), not bad input."""


def weight_names(book, tensors):
    """{tensor: the defined name of its cells on its weights tab}."""
    names = {t: C.weight_name_in(book.names, t)[0] for t in tensors}
    return {t: n for t, n in names.items() if n}


@contextlib.contextmanager
def opened(book, engine, timeout):
    """The book in a live engine: put, copy, calculate and read by defined name."""
    if engine in LIVE_SHEETS:
        yield LIVE_SHEETS[engine](book)
        return

    with LibreOfficeSession(timeout=timeout) as lo:
        yield lo.open(book.path, editable=True)


def run(book, ckpt, windows, engine="libreoffice", timeout=3600, on_step=lambda step: None):
    """Take one step per (inputs, targets) window in `book` (the contract.BookInfo of a training book of
    `ckpt`), with the optimizer and settings it holds. Returns (steps: a dict each, the final tensors and Adam's
    moments {"m": ..., "v": ...} (or None) as the sheet holds them, their largest difference from the
    reference's)."""
    tensors = as_written(ckpt).tensors
    settings = book.training["settings"]
    lr = settings[C.LEARNING_RATE]
    state = backward.AdamState.zeros(tensors) if book.training["optimizer"] == "adamw" else None
    adam = state and (settings[C.ADAM_BETA1], settings[C.ADAM_BETA2], settings[C.ADAM_EPS], settings[C.WEIGHT_DECAY])
    names = weight_names(book, tensors)
    copies = [(C.UPDATED + n, n) for n in names.values()]
    if state is not None:
        copies += [
            (new + n, old + n)
            for n in names.values()
            for new, old in ((C.NEW_ADAM_M, C.ADAM_M), (C.NEW_ADAM_V, C.ADAM_V))
        ]
    steps = []
    with opened(book, engine, timeout) as sheet:
        for k, (inputs, targets) in enumerate(windows):
            announce("step")
            t0 = time.perf_counter()
            sheet.put(C.TOKEN_IDS, [inputs])
            sheet.put(C.TARGETS, [targets])
            if state is not None:
                sheet.put(C.ADAM_STEP, [[k + 1]])
            sheet.calculate()
            loss = float(sheet.read([C.LOSS])[C.LOSS][0, 0])
            if k == len(windows) - 1:  # the weights (and moments) the run ends with: this step's results
                held = sheet.read([C.UPDATED + n for n in names.values()])
                moments = state and {
                    kind: from_layout(prefix, sheet.read([prefix + n for n in names.values()]), tensors)
                    for kind, prefix in (("m", C.NEW_ADAM_M), ("v", C.NEW_ADAM_V))
                }
            sheet.copy(copies)  # the copy-paste epoch
            seconds = time.perf_counter() - t0
            want, grads, _ = backward.loss_and_grads(tensors, ckpt.config, inputs, targets)
            if state is None:
                tensors = backward.sgd(tensors, grads, lr)
            else:
                tensors, state = backward.adamw(tensors, grads, state, lr, *adam)
            step = {
                "step": k + 1,
                "loss": loss,
                "reference_loss": want,
                "diff": abs(loss - want),
                "seconds": round(seconds, 3),
            }
            steps.append(step)
            on_step(step)
            if not abs(loss - want) <= TOLERANCE:
                raise Diverged(f"step {k + 1}: the spreadsheet's loss {loss!r} is not the reference's {want!r}")
    final = from_layout(C.UPDATED, held, tensors)
    diff = max(float(np.abs(final[t] - tensors[t]).max()) for t in tensors)
    if not diff <= TOLERANCE:
        raise Diverged(
            f"after {len(windows)} steps the spreadsheet's weights differ from the reference's by {diff:.3g}"
        )
    return steps, final, moments, diff


def save(out, ckpt, tok, windows, steps, final, moments, optimizer, lr):
    """The run's results in a new directory `out`, atomically: the trained checkpoint (config.json,
    model.safetensors, the tokenizer's files) and train.xlsx, a training book of the trained weights whose Loss
    tab charts the loss of every step (with Adam's moments, so it can take the next step)."""
    check_new_dir(out)
    with atomic_dir(out) as tmp:
        write(tmp, ckpt.config, final)
        for f in tok.files if tok else ():
            shutil.copyfile(f, tmp / Path(f).name)
        trained = load(tmp, given_name=str(out))
        inputs, targets = windows[-1]
        history = [s["loss"] for s in steps]
        build(
            trained,
            inputs,
            tmp / BOOK,
            tokenizer=tok,
            training=Training(targets, optimizer, lr, step=len(steps) + 1, moments=moments, history=history),
        )
